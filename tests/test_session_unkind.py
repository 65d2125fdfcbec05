"""The streaming session under unkind streams: still cameras, black screens, flashes, odd pixel
budgets, epoch-second clocks, extreme aspect ratios and odd pixel types. A bad frame is refused
with one ``InputError`` before anything changes (the session stays usable); a legitimate frame is
never refused, and the session answers as the offline path does on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_families import ALL_FAMILIES, tiny

from fluxmem.errors import ConfigError, InputError
from fluxmem.inference import SamplingOptions, answer
from fluxmem.session import StreamSession
from fluxmem.testing import moving_square_frames

MEMORY = {"short_frames": 4, "medium_frames": 8}  # S = 2 grid steps, M = 4 grid steps
QUESTION = "What is moving in the video?"


def offline_tokens(model, session, max_new_tokens=4):
    inputs = session.offline_inputs(QUESTION)
    with torch.inference_mode():
        out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def still(count, value=80, size=(56, 56)):
    return np.full((count, *size, 3), value, dtype=np.uint8)


def flashes(count, size=(56, 56)):
    """Black with a white flash every third grid step."""
    frames = still(count, 0, size)
    for index in range(count):
        if (index // 2) % 3 == 2:
            frames[index] = 255
    return frames


# ------------------------------------------------------------------ a. steps that keep no token
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
@pytest.mark.parametrize("clip", ["still", "black", "flashes"])
def test_a_step_that_keeps_no_token_leaves_the_stream_running(family, clip):
    model, processor = tiny(family)
    frames = {"still": still(40), "black": still(40, 0), "flashes": flashes(40)}[clip]
    session = StreamSession(model, processor, fps=2.0, keep_frames=True, **MEMORY)
    for index, frame in enumerate(frames):
        session.push(frame, index / 2.0)
    long_kept = session._kept_counts[: session.memory.num_final]
    assert session.memory.num_final >= 10 and 0 in long_kept, long_kept  # the case is reached
    stats = session.stats()
    assert stats["cache"]["tokens"] == len(session._head) + sum(long_kept)  # nothing appended for empty steps
    assert stats["cache"]["frames"] == session.memory.num_final
    reused = session.ask(QUESTION, max_new_tokens=4)
    assert reused.token_ids == session.ask(QUESTION, max_new_tokens=4, reuse_cache=False).token_ids
    assert reused.token_ids == offline_tokens(model, session)


def test_appending_zero_rows_changes_nothing():
    model, processor = tiny("qwen2_5_vl")
    ops = StreamSession(model, processor).ops
    cache = ops.new_cache()
    ops.forward(ops.embed([1, 2, 3]), ops.text_positions(0, 3), cache)
    before = [layer.keys.clone() for layer in cache.layers]
    dim = model.config.get_text_config().hidden_size
    assert ops.forward(torch.zeros(0, dim), torch.zeros(3, 0, dtype=torch.long), cache) is None
    assert ops.cache_length(cache) == 3
    assert all(torch.equal(layer.keys, kept) for layer, kept in zip(cache.layers, before))


# ------------------------------------------------------------------ b. pixel budgets of Qwen3-VL / Qwen3.5
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
@pytest.mark.parametrize("max_pixels", [3000, 5000, 7000])
@pytest.mark.parametrize("size", [(200, 330), (480, 640)])
def test_qwen3_frames_are_sized_as_the_processor_sizes_them(family, max_pixels, size):
    """The default min_pixels (4096 on the tiny processors, as the issue's) above max_pixels: the
    processor still sizes every frame; the session sizes them alike and answers as offline."""
    model, processor = tiny(family)
    session = StreamSession(model, processor, fps=2.0, max_pixels=max_pixels, keep_frames=True, **MEMORY)
    frames = moving_square_frames(6, height=size[0], width=size[1], square=56)
    for index, frame in enumerate(frames):
        session.push(frame, index / 2.0)
    inputs = session.offline_inputs(QUESTION)
    height, width = session.memory.grid_hw
    assert inputs["video_grid_thw"].tolist() == [[3, 2 * height, 2 * width]]
    assert session.ask(QUESTION, max_new_tokens=4).token_ids == offline_tokens(model, session)


def test_pixel_budgets_that_no_frame_can_meet_are_refused_at_once():
    model, processor = tiny("qwen3_vl")  # 16-px patches merged 2x2: one visual token covers 32x32 pixels
    for bad, message in (({"max_pixels": 0}, "max_pixels must be a whole number of pixels >= 1"),
                         ({"min_pixels": -1}, "min_pixels must be a whole number of pixels >= 1"),
                         ({"max_pixels": 10}, r"less than one visual token \(32\*32 = 1024 pixels"),
                         ({"min_pixels": 100_000, "max_pixels": 2000}, "must not exceed")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            StreamSession(model, processor, **bad)


# ------------------------------------------------------------------ c. a still scene is no scene change
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_still_scene_raises_no_scene_change_event(family):
    model, processor = tiny(family)
    session = StreamSession(model, processor, fps=2.0, proactive=True, **MEMORY)
    events = []
    for index, frame in enumerate(np.concatenate([still(24), still(24, 0)])):
        events += session.push(frame, index / 2.0)
    changes = [event.change_fraction for event in events]
    # the cut from grey to black is one scene change at most; the still stretches give none
    assert len(events) <= 1 and all(event.time == 12.5 for event in events), changes


# ------------------------------------------------------------------ d. the cap bounds every token held
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_the_cap_bounds_every_cached_token_of_a_still_stream(family):
    """Steps that kept no visual token still hold their timestamp and vision start/end tokens on
    Qwen3-VL / Qwen3.5: the cap counts them, so the cache stops growing once it binds."""
    model, processor = tiny(family)
    cap = 48
    session = StreamSession(model, processor, fps=2.0, max_memory_tokens=cap, **MEMORY)
    video_tokens = []
    for index, frame in enumerate(still(120, size=(28, 28))):
        session.push(frame, index / 2.0)
        if index % 2:
            video_tokens.append(session.stats()["cache"]["tokens"] - len(session._head))
    assert max(video_tokens) <= cap, video_tokens
    assert max(video_tokens[35:]) <= max(video_tokens[15:35]), video_tokens  # no growth past the cap
    assert session.memory.num_final >= 50


# ------------------------------------------------------------------ e. epoch-second clocks
@pytest.mark.parametrize(("native", "fps", "start"), [(60, 30, 1.7e9), (60, 15, 1.7e9), (60, 30, 0.0), (30, 1, 1.7e9)])
def test_epoch_second_timestamps_sample_as_many_frames_as_timestamps_from_zero(native, fps, start):
    model, processor = tiny("qwen2_5_vl")
    session = StreamSession(model, processor, fps=fps, **MEMORY)
    seconds = 2
    frame = still(1, size=(28, 28))[0]
    for index in range(seconds * native):
        session.push(frame, start + index / native)
    assert session.stats()["frames_sampled"] == seconds * fps


# ------------------------------------------------------------------ f. sizes the processor refuses
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("shape", [(8, 2000), (2000, 8)])
def test_an_extreme_aspect_ratio_is_refused_at_the_first_push_and_the_session_stays_usable(family, shape):
    model, processor = tiny(family)
    session = StreamSession(model, processor, fps=2.0, keep_frames=True, **MEMORY)
    with pytest.raises(InputError, match=f"a {shape[0]}x{shape[1]} frame .*aspect ratio") as refused:
        session.push(still(1, size=shape)[0], 0.0)
    assert "\n" not in str(refused.value)
    assert session.time is None and session.stats()["frames_seen"] == 0
    for index, frame in enumerate(moving_square_frames(4, square=56)):
        session.push(frame, index / 2.0)
    assert session.num_steps == 2
    assert session.ask(QUESTION, max_new_tokens=4).token_ids == offline_tokens(model, session)


# ------------------------------------------------------------------ g. pixel types and timestamps
def test_bad_pixels_and_timestamps_are_refused_before_anything_changes():
    model, processor = tiny("qwen2_5_vl")
    session = StreamSession(model, processor, fps=2.0, keep_frames=True, **MEMORY)
    frames = moving_square_frames(4, square=56)
    session.push(frames[0], 0.0)
    before = session.stats()
    bad = [
        ((frames[1].astype(np.uint16) * 257), 0.5, "uint16 pixels from"),
        (frames[1].astype(np.float32), 0.5, "float pixels from .* to 255"),
        (np.full((112, 112, 3), np.nan, np.float32), 0.5, "NaN"),
        (frames[1] > 0, 0.5, "bool"),
        (frames[1], torch.tensor([0.5, 1.0]), "one number of seconds"),
        (frames[1], np.array([0.5, 1.0]), "one number of seconds"),
    ]
    for frame, timestamp, message in bad:
        with pytest.raises(InputError, match=message):
            session.push(frame, timestamp)
        assert session.stats() == before
    session.push(frames[1].astype(np.float32) / 255, torch.tensor(0.5))  # floats 0..1, a one-element tensor
    session.push(frames[2], 1.0)
    session.push(frames[3].astype(np.int64), 1.5)
    assert session.num_steps == 2
    pixels = [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames]
    assert all(torch.equal(kept, frame) for kept, frame in zip(session._frames, pixels))
    assert session.ask(QUESTION, max_new_tokens=4).token_ids == offline_tokens(model, session)


def test_answer_reads_pixels_by_the_same_rule_as_push():
    model, processor = tiny("qwen2_5_vl")
    frames = moving_square_frames(4, square=56)
    sampling = SamplingOptions(fps=2.0)
    expected = answer(model, processor, frames, QUESTION, sampling=sampling, max_new_tokens=4).token_ids
    for same in (frames.astype(np.float32) / 255, [frame.astype(np.float64) / 255 for frame in frames]):
        assert answer(model, processor, same, QUESTION, sampling=sampling, max_new_tokens=4).token_ids == expected
    for bad, message in ((frames.astype(np.float32), "float pixels from .* to 255"),
                         (frames.astype(np.uint16) * 257, "uint16 pixels")):  # fmt: skip
        with pytest.raises(InputError, match=message):
            answer(model, processor, bad, QUESTION, sampling=sampling, max_new_tokens=4)
