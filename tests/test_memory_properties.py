"""Property tests: random clips built from what cameras really send (still stretches, black and
white frames, flashes, cuts, frames made of one repeated token, partly still frames) on tiny and
odd-sized grids. For every clip: the batched path equals the incremental one decision for decision,
both equal the literal transcription of algorithm.md, nothing raises, and the keep masks obey the
hierarchy's invariants. A still scene gives no scene change."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_fluxmem import reference_compress
from test_memory_batched import _assert_same, _incremental

from fluxmem import FluxMemConfig, compress
from fluxmem.memory import LONG, MID, SHORT

KINDS = ("new", "still", "black", "white", "bright", "flash", "one_token", "partly_still", "drift")


def _clip(kinds, height, width, dim, seed, dtype=torch.float32):
    """Features ``[T*H*W, D]`` for a sequence of frame kinds; "flash" is a white frame followed by
    the frame before it again (two grid steps)."""
    g = torch.Generator().manual_seed(seed)
    cells = height * width
    frames = []

    def new():
        base = torch.randn(cells, dim, generator=g)
        return base + 0.8 * torch.roll(base, 1, dims=0)  # neighbours alike: SDC has clusters

    for kind in kinds:
        last = frames[-1] if frames else new()
        if kind == "new":
            frames.append(new())
        elif kind == "still":
            frames.append(last.clone())
        elif kind == "black":
            frames.append(torch.zeros(cells, dim))
        elif kind == "white":
            frames.append(torch.full((cells, dim), 0.75))
        elif kind == "bright":  # exactly proportional to the white frame
            frames.append(torch.full((cells, dim), 1.5))
        elif kind == "flash":
            frames += [torch.full((cells, dim), 0.75), last.clone()]
        elif kind == "one_token":  # every cell the same token
            frames.append(torch.randn(1, dim, generator=g).expand(cells, dim).clone())
        elif kind == "partly_still":
            changed = torch.rand(cells, 1, generator=g) < 0.5
            frames.append(torch.where(changed, new(), last))
        elif kind == "drift":
            frames.append(last + 0.3 * torch.randn(cells, dim, generator=g))
    return torch.cat(frames).to(dtype), len(frames)


@st.composite
def clips(draw):
    height = draw(st.sampled_from([1, 1, 2, 3, 4, 5]))
    width = draw(st.sampled_from([1, 1, 2, 3, 5, 6, 7]))
    dim = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 16]))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=12))
    config = dict(
        short_frames=draw(st.integers(2, 8)),
        medium_frames=draw(st.integers(0, 8)),
        direct_drop_sim=draw(st.sampled_from([0.8, 0.8, None, 0.95, 1.0])),
        pair_sim_threshold=draw(st.sampled_from([None, None, None, 0.9])),
    )
    seed = draw(st.integers(0, 2**16))
    return height, width, dim, kinds, config, seed


def _assert_invariants(result, config):
    t, h, w = result.grid_thw
    short, mid = config.grid_steps(2)
    keep = result.keep.reshape(t, h * w)
    tiers = [record.tier for record in result.frames]
    n_mid, n_long = max(0, t - short), max(0, t - short - mid)
    assert tiers == [LONG] * n_long + [MID] * (n_mid - n_long) + [SHORT] * (t - n_mid)
    assert bool(keep[n_mid:].all())  # short-term frames stay whole
    for record in result.frames[:n_mid]:
        assert torch.equal(record.keep, keep[record.index])
        if record.tier == MID:
            assert torch.equal(record.keep, ~record.tas_dropped)
        else:  # SDC only removes tokens TAS kept; every cluster keeps exactly its anchor
            assert not bool((record.keep & record.tas_dropped).any())
            merged = record.merged_into >= 0
            assert not bool((merged & record.tas_dropped).any())
            assert torch.equal(record.keep, ~record.tas_dropped & ~record.sdc_dropped)
            assert bool(record.keep[record.anchors].all())
            assert torch.equal(torch.unique(record.merged_into[merged]), record.anchors.nonzero().squeeze(1))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clips())
def test_random_clips_batched_incremental_and_reference_agree(clip):
    height, width, dim, kinds, config, seed = clip
    features, t = _clip(kinds, height, width, dim, seed)
    cfg = FluxMemConfig(**config)
    result = compress(features, (t, height, width), cfg, chunk_frames=1 + seed % 4)
    _assert_same(result, _incremental(features, (t, height, width), cfg))
    keep, merged = reference_compress(features, (t, height, width), **config)
    assert torch.equal(result.keep, keep)
    # the reference averages a cluster with Tensor.mean, we with a sum in row order: the means
    # agree to float32 rounding, not bit for bit
    assert torch.allclose(result.features, merged, rtol=0, atol=1e-5)
    _assert_invariants(result, cfg)


@pytest.mark.parametrize("kind", ["still", "black", "white", "one_token"])
@pytest.mark.parametrize("grid", [(1, 1), (1, 7), (5, 1), (4, 6), (16, 32)])
def test_a_still_scene_changes_nothing(kind, grid):
    """Identical frames: every distance is exactly 0 (or exactly 1 for black frames), so no token
    counts as changed and TAS drops every token of the mid-term frames (identical to the next)."""
    height, width = grid
    dim = 64 if grid == (16, 32) else 8
    features, t = _clip(["new" if kind == "still" else kind] + ["still"] * 11, height, width, dim, seed=1)
    result = compress(features, (t, height, width), FluxMemConfig(short_frames=4, medium_frames=4))
    memory = _incremental(features, (t, height, width), FluxMemConfig(short_frames=4, medium_frames=4))
    changes = torch.stack([record.change_fraction for record in memory.frames[1:]])
    assert torch.equal(changes, torch.zeros_like(changes))
    assert torch.equal(torch.stack([r.change_fraction for r in result.frames[1:]]), changes)
    if kind != "black":  # sim = 1 > 0.8: dropped outright; black tokens have cosine 0 and stay
        assert not bool(result.keep.reshape(t, -1)[: t - 2].any())


def test_identical_tokens_have_distance_exactly_zero_in_every_dtype():
    """The float32 product of two identical normalised tokens is 1 only up to rounding; the
    memory settles it exactly, in float32 and bfloat16 alike, also for exactly proportional tokens."""
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(6 * 5, 3584, generator=g) * 3.0
    noisy = frame / frame.norm(dim=-1, keepdim=True)
    assert bool(((noisy * noisy).sum(-1) != 1).any())  # the rounding this guards against
    for dtype in (torch.float32, torch.bfloat16):
        features = torch.cat([frame, frame, 2 * frame]).to(dtype)
        memory = _incremental(features, (3, 6, 5), FluxMemConfig(short_frames=2, medium_frames=0))
        assert float(memory.frames[1].change_fraction) == 0.0
        assert float(memory.frames[2].change_fraction) == 0.0
        # TAS ran on frames 0 and 1: every token identical to the next, dropped outright
        assert not bool(memory.frames[0].keep.any()) and not bool(memory.frames[1].keep.any())


def test_a_cut_is_a_scene_change_and_a_still_scene_is_not():
    features, t = _clip(["new", "still", "still", "new", "still"], 4, 6, 16, seed=3)
    memory = _incremental(features, (t, 4, 6), FluxMemConfig())
    changes = [float(record.change_fraction) for record in memory.frames[1:]]
    assert changes[0] == changes[1] == changes[3] == 0.0
    assert changes[2] > 0.3  # the cut: distances spread, Otsu splits them, many exceed


@pytest.mark.parametrize("grid", [(3, 5), (1, 9), (7, 1), (4, 6)])
def test_batched_equals_incremental_where_matmuls_use_the_blas(grid):
    """At real feature sizes the window products run in the BLAS (tiny ones run in torch's own
    loop): the offline and streaming paths still compute bit-identical similarities, also on odd
    grids, chunked or not."""
    height, width = grid
    features, t = _clip(["new", "drift", "partly_still", "still", "new", "drift", "flash", "new", "drift"],
                        height, width, 384, seed=5)
    cfg = FluxMemConfig(short_frames=4, medium_frames=4, direct_drop_sim=None)
    memory = _incremental(features, (t, height, width), cfg)
    for chunk in (None, 1, 3):
        _assert_same(compress(features, (t, height, width), cfg, chunk_frames=chunk), memory)
