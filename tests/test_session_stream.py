"""Stream behaviour of the session: bad input, frame sampling, the memory cap, proactive events,
statistics and reset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fluxmem import ConfigError, InputError, UnsupportedModelError
from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames

MEMORY = {"short_frames": 4, "medium_frames": 8}
QUESTION = "What is moving in the video?"


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen2_5_vl()


@pytest.fixture(scope="module")
def frames():
    return moving_square_frames(24)


def test_backwards_or_repeated_timestamps_are_rejected_before_any_change(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, **MEMORY)
    for i in range(5):
        session.push(frames[i], float(i))
    before = session.stats()
    for bad in (3.0, 4.0, float("nan"), float("inf"), "5", None):
        with pytest.raises(InputError):
            session.push(frames[5], bad)
    assert session.stats() == before
    session.push(frames[5], 5.0)  # the stream goes on
    assert session.stats()["frames_seen"] == 6 and session.num_steps == 3


def test_frame_of_another_size_is_a_clear_error_and_changes_nothing(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, **MEMORY)
    session.push(frames[0], 0.0)
    before = session.stats()
    with pytest.raises(InputError, match="frame size changed mid-stream from 112x112 to 84x112"):
        session.push(frames[1][:84], 1.0)
    for bad in (np.zeros((112, 112), np.uint8), np.zeros((112, 112, 4), np.uint8), "frame"):
        with pytest.raises(InputError):
            session.push(bad, 1.0)
    assert session.stats() == before
    session.push(frames[1], 1.0)
    assert session.num_steps == 1


def test_empty_question_and_bad_options_are_clear_errors(tiny):
    model, processor = tiny
    session = StreamSession(model, processor, **MEMORY)
    for question in ("", "   "):
        with pytest.raises(InputError, match="question is empty"):
            session.ask(question)
    for question in (None, 123):
        with pytest.raises(InputError, match=f"^the question must be a string, got {type(question).__name__} {question}.$"):
            session.ask(question)
    with pytest.raises(ConfigError, match="num_beams"):
        session.ask(QUESTION, num_beams=2)
    with pytest.raises(ConfigError):
        session.ask(QUESTION, max_new_tokens=0)
    for bad in ({"fps": 0}, {"gamma": 1.5}, {"max_memory_tokens": 0}, {"short_frames": 1},
                {"instruction": "describe"}, {"proactive": True, "instruction": "  "}, {"window": 3}):
        with pytest.raises(ConfigError):
            StreamSession(model, processor, **bad)
    with pytest.raises(ConfigError, match="keep_frames=True"):
        session.offline_inputs(QUESTION)


def test_unsupported_model_is_a_clear_error(tiny):
    _, processor = tiny

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Identity()
            self.config = type("Config", (), {"model_type": "llama"})()

    with pytest.raises(UnsupportedModelError, match="llama"):
        StreamSession(Other(), processor)


def test_frame_types_give_the_same_pixels(tiny, frames):
    _model, _processor = tiny
    reference = torch.from_numpy(frames[3]).permute(2, 0, 1)
    for frame in (frames[3], torch.from_numpy(frames[3]), reference.clone(), Image.fromarray(frames[3]),
                  frames[3].astype(np.float32) / 255, frames[3].astype(np.float64) / 255, frames[3].astype(np.int64),
                  frames[3].astype(np.uint16)):  # floats are 0..1; other integers 0..255 as they are
        assert torch.equal(StreamSession._as_chw_uint8(frame), reference)


def test_frames_are_sampled_to_the_session_fps(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, fps=1.0, keep_frames=True, **MEMORY)
    # 4 fps source with a little jitter: one frame per second is kept (the first at or after each slot)
    times = [0.0, 0.25, 0.5, 0.75, 1.01, 1.25, 1.5, 1.75, 1.99, 2.25, 3.6, 3.7, 4.0, 6.2, 6.5]
    kept = []
    for i, t in enumerate(times):
        before = session.stats()["frames_sampled"]
        session.push(frames[i], t)
        if session.stats()["frames_sampled"] > before:
            kept.append(t)
    assert kept == [0.0, 1.01, 2.25, 3.6, 4.0, 6.2]
    assert session.num_steps == 3 and session.stats()["frames_pending"] == 0
    assert session.offline_inputs(QUESTION)["video_grid_thw"].tolist() == [[3, 8, 8]]


def test_memory_cap_drops_oldest_long_term_frames_from_memory_and_cache(tiny):
    model, processor = tiny
    frames = moving_square_frames(64)
    cap = 64
    capped = StreamSession(model, processor, max_memory_tokens=cap, **MEMORY)
    free = StreamSession(model, processor, **MEMORY)
    cache_lengths = []
    for i, frame in enumerate(frames):
        capped.push(frame, float(i))
        free.push(frame, float(i))
        stats = capped.stats()
        recent = stats["memory"]["tiers"]["mid"]["kept"] + stats["memory"]["tiers"]["short"]["kept"]
        assert stats["memory"]["kept"] <= max(cap, recent)
        if capped._cache is not None:  # the cache holds the head + exactly the kept long-term tokens
            assert stats["cache"]["tokens"] == len(capped._head) + stats["memory"]["tiers"]["long"]["kept"]
        cache_lengths.append(stats["cache"]["tokens"])
    assert capped.stats()["memory"]["evicted_frames"] > 10
    assert max(cache_lengths[32:]) <= len(capped._head) + cap
    assert free.stats()["memory"]["kept"] > 2 * capped.stats()["memory"]["kept"]  # uncapped grows
    # the right tokens were dropped: the first layer's keys/values (which depend on a token alone,
    # not on its context) of the surviving long-term tokens equal the uncapped cache's last ones
    long_kept = capped.stats()["memory"]["tiers"]["long"]["kept"]
    mine, theirs = capped._cache.layers[0], free._cache.layers[0]
    assert torch.equal(mine.keys[..., -long_kept:, :], theirs.keys[..., -long_kept:, :])
    assert torch.equal(mine.values[..., -long_kept:, :], theirs.values[..., -long_kept:, :])
    assert 0 < long_kept < theirs.keys.shape[-2] - len(capped._head)
    assert not torch.allclose(mine.keys[..., -long_kept - 1 :, :], theirs.keys[..., -long_kept - 1 :, :])
    # dropped frames no longer hold features in the memory
    assert capped.memory.kept(0)[1].shape[0] == 0
    answer = capped.ask(QUESTION, max_new_tokens=4)
    assert answer.memory["evicted_frames"] == capped.stats()["memory"]["evicted_frames"]
    assert len(answer.token_ids) >= 1


def scene_cut_frames():
    first = moving_square_frames(12)
    second = moving_square_frames(12, seed=5, background=200)
    return np.concatenate([first, second])  # cut between raw frames 11 and 12 = grid steps 5 and 6


def test_proactive_events_follow_the_change_fraction(tiny):
    model, processor = tiny
    session = StreamSession(model, processor, proactive=True, gamma=0.3, **MEMORY)
    events = []
    for i, frame in enumerate(scene_cut_frames()):
        events += session.push(frame, float(i))
    fractions = [r.change_fraction for r in session.memory.frames]
    expected = [i for i, f in enumerate(fractions) if f is not None and float(f) > 0.3]
    assert [e.frame_index for e in events] == expected == [6]
    assert events[0].kind == "scene_change" and events[0].time == 13.0 and events[0].answer is None
    assert events[0].change_fraction == float(fractions[6])


def test_standing_instruction_is_answered_at_the_scene_change(tiny):
    model, processor = tiny
    instruction = "Describe what changed."
    proactive = StreamSession(model, processor, proactive=True, gamma=0.3, instruction=instruction,
                              instruction_max_new_tokens=6, **MEMORY)
    plain = StreamSession(model, processor, **MEMORY)
    for i, frame in enumerate(scene_cut_frames()):
        events = proactive.push(frame, float(i))
        plain.push(frame, float(i))
        if events:
            assert events[0].answer.question == instruction
            assert events[0].answer.token_ids == plain.ask(instruction, max_new_tokens=6).token_ids
            assert events[0].to_dict()["answer"] == events[0].answer.text
    assert proactive.stats()["questions"] == 1


def test_stats_and_reset(tiny, frames):
    model, processor = tiny
    session = StreamSession(model, processor, **MEMORY)
    for i, frame in enumerate(frames[:21]):
        session.push(frame, float(i))
    session.ask(QUESTION, max_new_tokens=3)
    stats = session.stats()
    assert stats["frames_seen"] == 21 and stats["frames_sampled"] == 21 and stats["frames_pending"] == 1
    assert stats["grid_steps"] == 10
    tiers = stats["memory"]["tiers"]
    assert [tiers[t]["frames"] for t in ("short", "mid", "long")] == [2, 4, 4]
    assert tiers["short"]["kept"] == 32 and stats["memory"]["tokens"] == 160
    assert stats["memory"]["retained_fraction"] == stats["memory"]["kept"] / 160
    assert stats["cache"]["bytes"] > 0 and stats["questions"] == 1
    assert all(stats["timings_ms"][k] > 0 for k in ("preprocess", "encode", "memory", "cache", "prefill", "decode"))
    session.reset()
    stats = session.stats()
    assert stats["frames_seen"] == 0 and stats["grid_steps"] == 0 and stats["cache"]["tokens"] == 0
    session.push(frames[0], 0.0)  # earlier timestamps are fine after a reset
    assert session.time == 0.0
