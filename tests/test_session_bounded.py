"""Bounded streams: under ``max_memory_tokens`` what a session holds (the memory's features, the
key/value cache, the per-token extras such as Qwen3-VL's deepstack rows) stops growing once the cap
binds, on every family; final frames are held once (in the cache), and the cap cuts the cache once
per several frames, not at every grid step."""

from __future__ import annotations

import pytest
import torch

from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames
from fluxmem.testing_families import FAMILIES, build_tiny

MEMORY = {"short_frames": 4, "medium_frames": 8}  # S = 2 grid steps, M = 4 grid steps
CAP = 96
TEXT_ROWS_CAP = 160  # Qwen3-VL / Qwen3.5: the cap counts each step's timestamp and vision start/end too;
# above what their mid- and short-term frames hold with those rows, so that long-term frames reach the cache
STEPS = 48


def tiny(family):
    return build_tiny_qwen2_5_vl() if family == "qwen2_5_vl" else build_tiny(family)


@pytest.mark.parametrize("family", ["qwen2_5_vl", *FAMILIES])
def test_resident_bytes_stop_growing_once_the_cap_binds(family):
    model, processor = tiny(family)
    cap = CAP if family in ("qwen2_5_vl", "qwen2_vl") else TEXT_ROWS_CAP
    session = StreamSession(model, processor, fps=2.0, max_memory_tokens=cap, **MEMORY)
    frames = moving_square_frames(2 * STEPS, square=56)
    dim = model.config.get_text_config().hidden_size
    deepstack = len(getattr(model.config.vision_config, "deepstack_visual_indexes", None) or ())
    resident, bound_at = [], None
    for i, frame in enumerate(frames):
        session.push(frame, i / 2.0)
        if i % 2 == 0:
            continue
        stats, memory = session.stats(), session.memory
        held = stats["resident_bytes"]
        assert held["total"] == held["memory"] + held["cache"] + held["extras"]
        assert held["cache"] == stats["cache"]["bytes"] and held["extras"] == stats["extras_bytes"]
        recent = memory.num_frames - memory.num_final  # mid- and short-term frames: whole features
        assert stats["memory"]["kept"] <= cap + recent * memory.cells
        # extras: every cell's deepstack rows of non-final frames; final frames hold none (cached)
        assert held["extras"] == recent * memory.cells * deepstack * dim * 4
        final_kept = stats["memory"]["tiers"]["long"]["kept"]
        if session.ops.can_cut:  # final frames' features live in the cache only
            assert held["memory"] == recent * memory.cells * dim * 4 + memory.buffer_bytes()
        else:  # a recurrent cache is prefilled again after a drop: it needs them (at most the cap)
            assert held["memory"] == recent * memory.cells * dim * 4 + memory.buffer_bytes() + final_kept * dim * 4
        if bound_at is None and stats["memory"]["evicted_frames"]:
            bound_at = len(resident)
        resident.append(held["total"])
    assert bound_at is not None, "the cap never bound"
    after = resident[bound_at:]
    half = len(after) // 2
    assert half >= 8, bound_at  # at least 16 grid steps past the cap
    assert max(after[half:]) <= max(after[:half]), after  # no growth past the cap
    evicted = session.stats()["memory"]["evicted_frames"]
    assert evicted >= 15
    cuts = session.stats()["cache"]["cuts"]  # cut (or, recurrent, prefilled again) in batches, not every step
    assert 0 < cuts <= evicted // 2, (cuts, evicted)
    assert resident[-1] > resident[0]  # it did grow until the cap bound
    assert len(session.ask("What is moving?", max_new_tokens=2).token_ids) >= 1


def test_cap_drops_down_to_the_low_water_mark_in_one_cut():
    """Once the tokens held pass the cap, the oldest final frames are dropped until at most the
    low-water mark (cap less an eighth) remain, in one cut of the cache; the cache then holds the
    head and exactly the surviving long-term tokens, and first-layer keys show they are the right ones."""
    model, processor = build_tiny_qwen2_5_vl()
    cap = 64
    session = StreamSession(model, processor, max_memory_tokens=cap, **MEMORY)
    free = StreamSession(model, processor, **MEMORY)
    assert session.cap_low_water == 56
    before = 0
    for i, frame in enumerate(moving_square_frames(64)):
        session.push(frame, float(i))
        free.push(frame, float(i))
        stats = session.stats()
        evicted = stats["memory"]["evicted_frames"]
        recent = stats["memory"]["tiers"]["mid"]["kept"] + stats["memory"]["tiers"]["short"]["kept"]
        if evicted > before and stats["memory"]["tiers"]["long"]["frames"]:
            assert stats["memory"]["kept"] <= max(56, recent)  # dropped down to the low-water mark
            # ... and not one frame further
            last_dropped = int(free.memory.frames[evicted - 1].keep.sum())
            assert stats["memory"]["kept"] + last_dropped > 56
        assert stats["memory"]["kept"] <= max(cap, recent)
        if session._cache is not None:
            assert stats["cache"]["tokens"] == len(session._head) + stats["memory"]["tiers"]["long"]["kept"]
        before = evicted
    long_kept = session.stats()["memory"]["tiers"]["long"]["kept"]
    assert long_kept > 0 and before >= 10
    mine, theirs = session._cache.layers[0], free._cache.layers[0]
    assert torch.equal(mine.keys[..., -long_kept:, :], theirs.keys[..., -long_kept:, :])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_cap_policy_prefill_answers_equal_a_full_prefill_of_the_kept_tokens(family):
    """Under ``cap_policy="prefill"`` the cache is computed again from the head after the cap
    evicts, so an answer with cache reuse equals a full prefill of the kept tokens (the evicted
    frames absent, the survivors at their original positions) token for token, at every question;
    the cache then holds the head and the surviving long-term tokens, and was never cut in place."""
    model, processor = tiny(family)
    # Qwen3-VL's cap also counts each step's timestamp and vision start/end rows: a cap above what
    # its mid- and short-term steps hold, so that final frames enter the cache before they leave
    cap = 200 if family == "qwen3_vl" else 64
    session = StreamSession(model, processor, fps=2.0, max_memory_tokens=cap, cap_policy="prefill",
                            keep_frames=True, **MEMORY)  # fmt: skip
    assert session.holds_final and not session.cuts_cache
    checked = 0
    for i, frame in enumerate(moving_square_frames(48, square=56)):
        session.push(frame, i / 2.0)
        if i % 8 != 7 or not session.stats()["memory"]["evicted_frames"]:
            continue
        reused = session.ask("What is moving?", max_new_tokens=6)
        full = session.ask("What is moving?", max_new_tokens=6, reuse_cache=False)
        assert reused.token_ids == full.token_ids, (i, reused.token_ids, full.token_ids)
        assert reused.prefilled_tokens < full.prefilled_tokens  # the prefix came from the cache
        checked += 1
    stats = session.stats()
    assert checked >= 2 and stats["memory"]["evicted_frames"] >= 6
    assert stats["cache"]["cuts"] >= 1 and stats["cache"]["cap_policy"] == "prefill"


def test_cap_policy_is_checked():
    model, processor = build_tiny_qwen2_5_vl()
    from fluxmem.errors import ConfigError

    with pytest.raises(ConfigError, match="cap_policy must be one of 'cut', 'prefill', got 'drop'"):
        StreamSession(model, processor, cap_policy="drop")
    assert StreamSession(model, processor).cap_policy == "cut"
