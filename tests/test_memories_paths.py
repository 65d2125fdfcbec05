"""Every registered memory method through every path of the main suite: the drop-in switch
(``generate(memory=...)`` and ``enable(model, memory=...)``), the streaming session (or its one-line
refusal) and the transformers path of evaluation (``fluxmem.inference.answer``). The list is the
registry: adding a method adds it to every test here (and to ``tests/test_vllm_plugin.py``'s)."""

from __future__ import annotations

import pytest
import torch

import fluxmem
import fluxmem.memories as memories
from fluxmem import ConfigError
from fluxmem.adapters import registry
from fluxmem.inference import answer
from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames

FLUXMEM = {"short_frames": 4, "medium_frames": 8}  # S = 2, M = 4 grid steps: every tier acts on 12 steps
SPECS = [memories.get(name, **(FLUXMEM if name.startswith("fluxmem") else {})).spec for name in memories.names()]
CAUSAL = [spec for spec in SPECS if memories.get(spec).causal]
QUESTION = "What is moving in the video?"
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_qwen2_5_vl()
    fluxmem.enable(model, **FLUXMEM)
    return model, processor


@pytest.fixture(scope="module")
def frames():
    return moving_square_frames(24)  # 12 grid steps at 1 fps


def _inputs(session_like, frames):
    session = session_like
    for i, frame in enumerate(frames):
        session.push(frame, float(i))
    return session.offline_inputs(QUESTION)


@pytest.fixture(scope="module")
def video_inputs(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, memory="none")
    return _inputs(session, frames)


def _generate(model, inputs, **options):
    reports = []
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, fluxmem_stats=reports.append, **options)
    return out[0, inputs["input_ids"].shape[1] :].tolist(), reports[0].stats


def _features(model, inputs):
    adapter = registry.adapter_for(model)
    with torch.inference_mode():
        features = adapter.encode_video(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    return features, adapter.merged_grid(inputs["video_grid_thw"][0].tolist())


@pytest.mark.parametrize("spec", SPECS)
def test_drop_in_runs_the_seam_and_reports_one_stats_type(tiny, video_inputs, spec):
    model, _ = tiny
    tokens, stats = _generate(model, video_inputs, memory=spec)
    features, grid = _features(model, video_inputs)
    seam = memories.get(spec).compress(features, grid)
    assert (stats.method, stats.tokens, stats.kept, stats.videos) == (spec, features.shape[0], seam.kept_tokens, 1)
    assert (stats.tiers is not None) == memories.get(spec).tiered
    assert stats.line().startswith(f"[memory] {spec}: visual tokens {features.shape[0]} -> {seam.kept_tokens} (")
    # enable(model, memory=...) installs the same method for every call
    other, _ = build_tiny_qwen2_5_vl()
    fluxmem.enable(other, memory=spec)
    other_tokens, other_stats = _generate(other, video_inputs)
    assert other_tokens == tokens and (other_stats.method, other_stats.kept) == (spec, stats.kept)


@pytest.mark.parametrize("spec", SPECS)
def test_eval_transformers_path_answers_with_each_method(tiny, frames, spec):
    model, processor = tiny
    clip = [frame for frame in frames]
    first = answer(model, processor, clip, QUESTION, max_new_tokens=NEW_TOKENS, memory=spec)
    assert first.memory["method"] == spec and first.memory["videos"] == 1
    again = answer(model, processor, clip, QUESTION, max_new_tokens=NEW_TOKENS, memory=spec)
    assert again.token_ids == first.token_ids and again.memory["kept"] == first.memory["kept"]


@pytest.mark.parametrize("spec", SPECS)
def test_session_equals_offline_or_refuses_in_one_line(tiny, frames, spec):
    model, processor = tiny
    if spec not in CAUSAL:
        with pytest.raises(ConfigError) as error:
            StreamSession(model, processor, memory=spec)
        assert "cannot run in a streaming session" in str(error.value) and "\n" not in str(error.value)
        return
    session = StreamSession(model, processor, keep_frames=True, memory=spec)
    for i, frame in enumerate(frames):
        session.push(frame, float(i))
        if i in (9, 23):  # mid-stream and at the end
            reply = session.ask(QUESTION, max_new_tokens=NEW_TOKENS)
            inputs = session.offline_inputs(QUESTION)
            offline, stats = _generate(model, inputs, **session.offline_generate_options())
            assert reply.token_ids == offline, (spec, i)
            assert (reply.memory["method"], reply.memory["kept"], reply.memory["tokens"]) == (spec, stats.kept, stats.tokens)


@pytest.mark.parametrize("spec", SPECS)
def test_match_fluxmem_budget_through_the_drop_in(tiny, video_inputs, spec):
    model, _ = tiny
    _, fluxmem_stats = _generate(model, video_inputs, memory=SPECS[0])
    _, stats = _generate(model, video_inputs, memory=spec, budget="match:" + SPECS[0])
    assert stats.target == fluxmem_stats.kept and stats.budget == "match:" + SPECS[0]
    if memories.get(spec).knob == "rate":
        assert stats.kept == fluxmem_stats.kept  # a rate reaches any count above its floor


def test_none_is_the_stock_model(tiny, video_inputs):
    model, _ = tiny
    assert _generate(model, video_inputs, memory="none")[0] == _generate(model, video_inputs, use_fluxmem=False)[0]


@pytest.mark.parametrize("frames_kept", [2, 4, 8])
def test_recent_equals_the_stock_model_given_only_the_last_frames(tiny, frames, frames_kept):
    model, processor = tiny
    whole = StreamSession(model, processor, keep_frames=True, memory="none")
    last = StreamSession(model, processor, keep_frames=True, memory="none")
    full_inputs = _inputs(whole, frames)
    last_inputs = _inputs(last, frames[-frames_kept:])
    recent, stats = _generate(model, full_inputs, memory=f"recent:{frames_kept}")
    stock, _ = _generate(model, last_inputs, use_fluxmem=False)
    assert stats.kept == last_inputs["video_grid_thw"].prod() // 4
    assert recent == stock
    # and the streaming session, on the whole stream, answers the same
    session = StreamSession(model, processor, memory=f"recent:{frames_kept}")
    for i, frame in enumerate(frames):
        session.push(frame, float(i))
    assert session.ask(QUESTION, max_new_tokens=NEW_TOKENS).token_ids == stock


def test_bad_memory_options_fail_in_one_line(tiny, video_inputs):
    model, processor = tiny
    with pytest.raises(ConfigError, match="evs has no option short_frames"):
        _generate(model, video_inputs, memory="evs", short_frames=4)
    with pytest.raises(ConfigError, match="multiple of 2"):
        _generate(model, video_inputs, memory="recent:3")
    with pytest.raises(ConfigError, match="scene-change signal"):
        StreamSession(model, processor, memory="recent:4", proactive=True)


# ------------------------------------------------------------------ the block-per-step families
_FAMILY_MODELS: dict = {}


def _family(family):
    from fluxmem.testing_families import build_tiny

    if family not in _FAMILY_MODELS:
        model, processor = build_tiny(family)
        fluxmem.enable(model, **FLUXMEM)
        _FAMILY_MODELS[family] = (model, processor)
    return _FAMILY_MODELS[family]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
@pytest.mark.parametrize("spec", SPECS)
def test_qwen3_families_run_every_method_in_the_drop_in_and_the_session(family, frames, spec):
    """Qwen3-VL (deepstack rows gathered per method) and Qwen3.5 (recurrent cache): the drop-in keeps
    what the seam keeps, and a causal method's session answers as the offline switch."""
    model, processor = _family(family)
    session = StreamSession(model, processor, keep_frames=True, memory="none" if spec not in CAUSAL else spec)
    for i, frame in enumerate(frames[:16]):
        session.push(frame, float(i))
    inputs = session.offline_inputs(QUESTION)
    tokens, stats = _generate(model, inputs, memory=spec)
    adapter = registry.adapter_for(model)
    with torch.inference_mode():
        features = adapter.encode_video(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    grid = adapter.merged_grid(inputs["video_grid_thw"][0].tolist())
    assert (stats.method, stats.kept) == (spec, memories.get(spec).compress(features, grid).kept_tokens)
    if spec in CAUSAL:
        assert session.ask(QUESTION, max_new_tokens=NEW_TOKENS).token_ids == tokens
