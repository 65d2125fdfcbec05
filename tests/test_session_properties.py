"""Property tests of the streaming session on every family: random clips made of still stretches,
black and white frames, flashes, cuts and noise, at tiny, odd-sized and extreme-aspect-ratio
frame sizes, on clocks counted from 0 or from the epoch. For every clip:

* nothing raises, except an ``InputError`` at the FIRST push of a size the processor refuses
  (aspect ratio over 200), which changes nothing: the session then takes the clip at another size;
* the frames taken are exactly the sampling rate's count (computed here in exact fractions);
* the session equals the offline path: the greedy answer and the kept tokens equal
  ``generate(use_fluxmem=True)`` on the same frames (encoded step by step, see :func:`offline`);
* under ``max_memory_tokens`` the video's part of the cache never exceeds the cap.

Small on purpose (a few examples per family, frames of a few pixels, a fixed seed per family so
that every run checks the same clips): the whole module runs in well under three minutes on two cores.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from _tiny_families import ALL_FAMILIES, tiny
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fluxmem.adapters import get_state
from fluxmem.errors import InputError
from fluxmem.inference import encode_videos
from fluxmem.session import StreamSession

MEMORY = {"short_frames": 2, "medium_frames": 4}  # S = 1 grid step, M = 2: every tier within a few steps
QUESTION = "What happens?"
ACCEPTED_SIZES = [(1, 1), (2, 5), (17, 23), (28, 28), (33, 47), (3, 300), (300, 3)]
REFUSED_SIZES = [(8, 2000), (2000, 8), (1, 300)]  # aspect ratios of 250 and more: no processor sizes them
CLOCKS = [(2, 2), (5, 2), (30, 15), (60, 30), (60, 15), (25, 10)]  # (native frames per second, session fps)
EXAMPLES = {"qwen3_5": 3, "qwen3_5_moe": 3}  # recurrent layers in plain PyTorch: slow on a CPU


segment = st.tuples(st.sampled_from(["still", "black", "white", "noise"]), st.integers(1, 12))
clips = st.fixed_dictionaries({
    "segments": st.lists(segment, min_size=1, max_size=4),
    "size": st.sampled_from(ACCEPTED_SIZES),
    "refused_first": st.one_of(st.none(), st.sampled_from(REFUSED_SIZES)),
    "clock": st.sampled_from(CLOCKS),
    "start": st.sampled_from([0.0, 1234.5, 1.7e9]),
    "cap": st.sampled_from([4, 16, 48]),
    "seed": st.integers(0, 2**16),
})  # fmt: skip


def render(clip) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: each segment a still random image (a cut from the one before), black,
    white (a one-frame segment is a flash) or noise (every frame new)."""
    rng = np.random.default_rng(clip["seed"])
    height, width = clip["size"]
    frames = []
    for kind, length in clip["segments"]:
        if kind == "noise":
            frames += list(rng.integers(0, 256, (length, height, width, 3), dtype=np.uint8))
            continue
        image = {"black": np.zeros((height, width, 3), np.uint8), "white": np.full((height, width, 3), 255, np.uint8)}.get(
            kind, rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        )  # fmt: skip
        frames += [image] * length
    return np.stack(frames)


def expected_samples(count: int, native: int, fps: float) -> int:
    """Frames a session at ``fps`` takes of ``count`` frames at ``native`` fps, in exact fractions:
    the first frame, then the first frame at or after each slot ``k / fps`` after it."""
    rate, taken, next_slot = Fraction(fps), 0, 0
    for index in range(count):
        elapsed = Fraction(index, native) * rate  # in slots
        if elapsed >= next_slot:
            taken += 1
            next_slot = math.floor(elapsed) + 1
    return taken


def offline(model, session):
    """``(answer tokens, kept tokens)`` of ``generate(use_fluxmem=True)`` on the session's frames,
    the video encoded one grid step at a time (``mm_encoder_outputs``, as ``fluxmem.answer`` passes
    them). Not the stock whole-video encoding: a CPU matrix product may round differently for a
    different number of rows (3.7e-8 measured on 1x1 frames), and on a uniform frame every cell's
    distance ties up to rounding, so whole and step-wise features can decide such a tie apart.
    Realistic frame sizes encode bit for bit alike (``test_session.py``)."""
    inputs = session.offline_inputs(QUESTION)
    encoded = encode_videos(model, inputs, chunk_steps=1)
    if encoded is not None:
        inputs = {key: value for key, value in inputs.items() if key != "pixel_values_videos"}
        inputs["mm_encoder_outputs"] = encoded
    with torch.inference_mode():
        out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=3, do_sample=False)
    summary = get_state(model).summary() if session.num_steps else {"kept": 0}
    return out[0, inputs["input_ids"].shape[1] :].tolist(), summary["kept"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_the_session_survives_unkind_clips_and_equals_offline(family):
    model, processor = tiny(family)

    @seed(ALL_FAMILIES.index(family))  # fixed clips per family (other clips on each family), the same every run
    @settings(max_examples=EXAMPLES.get(family, 6), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(clip=clips)
    def check(clip):
        native, fps = clip["clock"]
        session = StreamSession(model, processor, fps=fps, keep_frames=True, **MEMORY)
        capped = StreamSession(model, processor, fps=fps, max_memory_tokens=clip["cap"], **MEMORY)
        if clip["refused_first"] is not None:  # refused at the first push; nothing changes
            height, width = clip["refused_first"]
            for stream in (session, capped):
                before = stream.stats()
                with pytest.raises(InputError, match="cannot be sized") as refused:
                    stream.push(np.zeros((height, width, 3), np.uint8), clip["start"])
                assert "\n" not in str(refused.value) and stream.stats() == before
        frames = render(clip)
        for index, frame in enumerate(frames):
            timestamp = clip["start"] + index / native
            session.push(frame, timestamp)
            capped.push(frame, timestamp)
            assert capped.stats()["cache"]["tokens"] - len(capped._head or []) <= clip["cap"]
        assert session.stats()["frames_sampled"] == expected_samples(len(frames), native, fps)
        assert capped.stats()["frames_sampled"] == session.stats()["frames_sampled"]
        tokens, kept = offline(model, session)
        assert session.ask(QUESTION, max_new_tokens=3).token_ids == tokens
        assert session.stats()["memory"]["kept"] == kept
        capped.ask(QUESTION, max_new_tokens=3)

    check()
