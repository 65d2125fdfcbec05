"""The streaming session on the other Qwen families: Qwen2-VL answers equal offline generation at
several moments; families without a streaming strategy yet are refused with a clear message."""

from __future__ import annotations

import pytest
import torch

from fluxmem.adapters import install
from fluxmem.errors import UnsupportedModelError
from fluxmem.session import StreamSession
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import build_tiny

MEMORY = {"short_frames": 4, "medium_frames": 8}
QUESTION = "What is moving in the video?"


def _offline_tokens(model, session, max_new_tokens):
    inputs = session.offline_inputs(QUESTION)
    with torch.inference_mode():
        out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("fps", [1.0, 2.0])
def test_qwen2_vl_session_equals_offline_generation_at_several_moments(fps):
    model, processor = build_tiny("qwen2_vl")
    install(model, default_active=True)
    session = StreamSession(model, processor, keep_frames=True, fps=fps, **MEMORY)
    frames = moving_square_frames(24, square=56)
    moments = 0
    for i, frame in enumerate(frames):
        session.push(frame, i / fps)
        if i in (1, 9, 13, 23):  # first grid step, first long-term frame, later, end
            answer = session.ask(QUESTION, max_new_tokens=6)
            assert answer.token_ids == _offline_tokens(model, session, 6), i
            moments += 1
    assert moments == 4 and session.memory.num_final >= 4
    # the cache reuse changed nothing: a full prefill gives the same answer
    assert session.ask(QUESTION, max_new_tokens=6, reuse_cache=False).token_ids == answer.token_ids


def test_a_family_without_a_streaming_strategy_is_refused_clearly(monkeypatch):
    """An adapter registered for offline pruning but with no streaming strategy gets a clear
    message pointing to the offline path, not a wrong answer."""
    from fluxmem.adapters.qwen3_5 import Qwen3_5Adapter

    model, processor = build_tiny("qwen3_5")
    monkeypatch.setattr(Qwen3_5Adapter, "streaming", None)
    with pytest.raises(UnsupportedModelError, match="does not support .* yet.*use_fluxmem=True"):
        StreamSession(model, processor)
