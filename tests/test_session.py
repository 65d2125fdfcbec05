"""The streaming session is exact: its preprocessing, encoding, prompt, positions and answers equal
the offline path (processor on the whole video + ``generate(use_fluxmem=True)``)."""

from __future__ import annotations

import pytest
import torch

import fluxmem
from fluxmem.adapters import registry
from fluxmem.adapters.pruning import prune_prefill
from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames

MEMORY = {"short_frames": 4, "medium_frames": 8}  # S = 2 grid steps, M = 4 grid steps
QUESTION = "What is moving in the video?"


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_qwen2_5_vl()
    fluxmem.enable(model, **MEMORY)
    return model, processor


@pytest.fixture(scope="module")
def frames():
    return moving_square_frames(28)


def offline_tokens(model, session, question, max_new_tokens):
    inputs = session.offline_inputs(question)
    with torch.inference_mode():
        out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def video_prompt(session):
    return session._render(QUESTION, [], with_video=True)


def test_step_pixels_equal_whole_video_processing(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, **MEMORY)
    video = torch.from_numpy(frames[:8]).permute(0, 3, 1, 2)
    steps = [session.ops.step_pixels(video[i : i + 2]) for i in range(0, 8, 2)]
    whole = session.ops.offline_inputs(video_prompt(session), video, fps=1.0)
    assert torch.equal(torch.cat([pixels for pixels, _ in steps]), whole["pixel_values_videos"])
    assert all(grid.tolist() == [[1, 8, 8]] for _, grid in steps)
    assert whole["video_grid_thw"].tolist() == [[4, 8, 8]]
    assert whole["second_per_grid_ts"].tolist() == [2.0]  # temporal_patch_size / fps


def test_stepwise_encoding_equals_whole_video_encoding(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, **MEMORY)
    video = torch.from_numpy(frames[:8]).permute(0, 3, 1, 2)
    whole = session.ops.offline_inputs(video_prompt(session), video, fps=1.0)
    adapter = registry.adapter_for(model)
    with torch.inference_mode():
        together = adapter.encode_video(whole["pixel_values_videos"], whole["video_grid_thw"])
        apart = torch.cat([session.ops.encode_step_parts(*session.ops.step_pixels(video[i : i + 2]))[0] for i in range(0, 8, 2)])
    assert together.shape == (4 * 16, model.config.text_config.hidden_size)
    assert torch.equal(apart, together)


def test_full_prefill_equals_the_switch_pruned_prefill(tiny, frames):
    """Without cache reuse the session prefills exactly the offline pruned sequence: same kept
    tokens in the same order, same original M-RoPE positions, same (merged) embeddings."""
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, **MEMORY)
    for i, frame in enumerate(frames[:20]):
        session.push(frame, float(i))
    assert session.memory.num_final >= 2  # long-term frames with SDC merges are included
    inputs = session.offline_inputs(QUESTION)
    adapter = registry.adapter_for(model)
    with torch.inference_mode():
        prepared = adapter.prepare(**inputs)
        pruned = prune_prefill(adapter, prepared, inputs["input_ids"], inputs["attention_mask"], inputs["video_grid_thw"],
                               session.config)
        _, block, next_position = session._prefill_block(QUESTION, use_cache=False)
        embeds, positions = block.embeds, block.positions
    assert torch.equal(positions, pruned.position_ids[:, 0])
    assert torch.equal(embeds, pruned.inputs_embeds[0])
    # decoding continues where the stock rope deltas put it
    assert next_position == int(prepared.rope_deltas) + inputs["input_ids"].shape[1]


@pytest.mark.parametrize("reuse_cache", [True, False])
def test_ask_equals_offline_generate_at_every_moment(tiny, frames, reuse_cache):
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, reuse_cache=reuse_cache, **MEMORY)
    checked = set()
    for i, frame in enumerate(frames):
        session.push(frame, float(i))
        moment = None
        if i == 0:
            moment = "before the first grid step"
            assert session.num_steps == 0
        elif i == 1:
            moment = "first grid step"
        elif session.memory.num_final == 1 and "long-term" not in checked:
            moment = "long-term"  # right after the first frame moved to long-term
        elif i in (16, len(frames) - 1):
            moment = f"later {i}"
        if moment is None:
            continue
        checked.add(moment)
        answer = session.ask(QUESTION, max_new_tokens=8)
        assert answer.token_ids == offline_tokens(model, session, QUESTION, 8), moment
        assert answer.text == processor.batch_decode([answer.token_ids], skip_special_tokens=True)[0]
    assert {"before the first grid step", "first grid step", "long-term"} <= checked
    assert session.memory.num_final > 4


def test_offline_comparison_can_fail(tiny, frames):
    """The exactness checks are discriminating: the unpruned model answers differently here."""
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, **MEMORY)
    for i, frame in enumerate(frames):
        session.push(frame, float(i))
    answer = session.ask(QUESTION, max_new_tokens=8)
    inputs = session.offline_inputs(QUESTION)
    with torch.inference_mode():
        out = model.generate(**inputs, use_fluxmem=False, max_new_tokens=8, do_sample=False)
    assert answer.token_ids != out[0, inputs["input_ids"].shape[1] :].tolist()


def test_cache_holds_head_and_final_frames_and_questions_prefill_only_the_rest(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, **MEMORY)
    for i, frame in enumerate(frames[:24]):
        session.push(frame, float(i))
    memory, head = session.memory, len(session._head)
    final_tokens = sum(memory.kept(i)[0].numel() for i in range(memory.num_final))
    recent_tokens = sum(memory.kept(i)[0].numel() for i in range(memory.num_final, memory.num_frames))
    assert session.stats()["cache"]["tokens"] == head + final_tokens
    first = session.ask(QUESTION, max_new_tokens=6)
    tail = len(session.ops.prompt_ids(session._render(QUESTION, [], with_video=True)).tail)
    assert first.prefilled_tokens == recent_tokens + tail
    assert first.prompt_tokens == head + final_tokens + recent_tokens + tail
    assert session.stats()["cache"]["tokens"] == head + final_tokens  # cut back after answering
    second = session.ask(QUESTION, max_new_tokens=6)
    assert second.token_ids == first.token_ids
    assert session.ask(QUESTION, max_new_tokens=6, reuse_cache=False).token_ids == first.token_ids


def test_cached_keys_equal_a_fresh_prefill_of_the_same_prefix(tiny, frames):
    """Appending final frames step by step gives the keys a one-shot prefill of the prefix gives."""
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, **MEMORY)  # holds final frames' features
    for i, frame in enumerate(frames[:24]):
        session.push(frame, float(i))
    ops, memory = session.ops, session.memory
    embeds = [ops.embed(session._head)]
    positions = [ops.text_positions(0, len(session._head))]
    for index in range(memory.num_final):
        block = session._segment(index)
        embeds.append(block.embeds)
        positions.append(block.positions)
    fresh = ops.new_cache()
    with torch.inference_mode():
        ops.forward(torch.cat(embeds), torch.cat(positions, dim=1), fresh)
    for built, reference in zip(session._cache.layers, fresh.layers):
        # built block by block, the deeper layers' keys come from attention over other query lengths
        # than one prefill of the whole prefix: equal up to float rounding, not bit for bit
        torch.testing.assert_close(built.keys, reference.keys, rtol=0, atol=1e-4)
        torch.testing.assert_close(built.values, reference.values, rtol=0, atol=1e-4)


def test_history_keeps_earlier_turns_and_stays_exact(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, keep_frames=True, history=True, **MEMORY)
    for i, frame in enumerate(frames[:14]):
        session.push(frame, float(i))
    first = session.ask("What color is the square?", max_new_tokens=5)
    for i, frame in enumerate(frames[14:20], start=14):
        session.push(frame, float(i))
    text = processor.batch_decode(session.offline_inputs(QUESTION)["input_ids"])[0]
    assert "What color is the square?" in text and first.text in text
    second = session.ask(QUESTION, max_new_tokens=6)
    session._history.pop()  # offline_inputs reads the history as it was when the question was asked
    assert second.token_ids == offline_tokens(model, session, QUESTION, 6)


def test_session_takes_the_switch_settings_and_keywords_override(tiny):
    model, processor = tiny
    assert StreamSession(model, processor).config == fluxmem.FluxMemConfig(**MEMORY)
    assert StreamSession(model, processor, short_frames=2).config.short_frames == 2


def test_final_frames_live_only_in_the_cache_unless_full_prefills_need_them(tiny, frames):
    """With cache reuse, a final frame's features are released from the memory once its keys and
    values are cached (held once, not twice); a full prefill, which needs them, is then a clear
    error. keep_frames=True (or reuse_cache=False) keeps them, and the answers agree."""
    model, processor = tiny
    lean = StreamSession(model, processor, **MEMORY)
    kept = StreamSession(model, processor, keep_frames=True, **MEMORY)
    for i, frame in enumerate(frames[:24]):
        lean.push(frame, float(i))
        kept.push(frame, float(i))
    memory, cells, dim = lean.memory, lean.memory.cells, model.config.text_config.hidden_size
    final = memory.num_final
    assert final >= 4 and not lean.holds_final and kept.holds_final
    final_bytes = sum(kept.memory.kept(i)[1].numel() * 4 for i in range(final))
    assert final_bytes > 0
    # the lean memory holds the non-final frames' pushed features and its fixed working buffers only
    assert lean.stats()["resident_bytes"]["memory"] == (memory.num_frames - final) * cells * dim * 4 + memory.buffer_bytes()
    assert kept.stats()["resident_bytes"]["memory"] == lean.stats()["resident_bytes"]["memory"] + final_bytes
    with pytest.raises(fluxmem.InputError, match="released"):
        memory.kept(0)
    assert memory.kept(final)[0].numel() > 0  # mid-term frames are untouched
    with pytest.raises(fluxmem.ConfigError, match="keep_frames=True"):
        lean.ask(QUESTION, max_new_tokens=4, reuse_cache=False)
    answer = lean.ask(QUESTION, max_new_tokens=6)
    assert answer.token_ids == kept.ask(QUESTION, max_new_tokens=6).token_ids
    assert answer.token_ids == kept.ask(QUESTION, max_new_tokens=6, reuse_cache=False).token_ids
