"""The batched offline path (``compress``) against the incremental one (``FluxMemory``), decision
for decision, and the merge helpers that apply SDC's clusters to any token-aligned tensor."""

import pytest
import torch
from reference_fluxmem import reference_compress

from fluxmem import FluxMemConfig, FluxMemory, InputError, compress
from fluxmem.memory import LONG, MID, SHORT, merge_full, merge_kept


def _video(T, H, W, D, seed, *, identical=0.0, dtype=torch.float32):
    """Redundant random video: slowly changing cells, spatially correlated; with ``identical`` > 0
    that share of cells repeats the previous frame's token exactly, and some neighbouring cells are
    exact copies (distances of exactly 0 or a rounding hair below)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(H, W, D, generator=g)
    base = base + torch.roll(base, 1, dims=1) * 0.8
    frames, current = [], base
    for _ in range(T):
        moved = torch.rand(H, W, 1, generator=g) > 0.6
        current = current + 1.2 * torch.randn(H, W, D, generator=g) * moved
        frame = current + 0.03 * torch.randn(H, W, D, generator=g)
        if identical and frames:
            same = torch.rand(H, W, 1, generator=g) < identical
            frame = torch.where(same, frames[-1], frame)
        if identical and W > 1:
            frame[:, 1::3] = frame[:, 0:-1:3][:, : frame[:, 1::3].shape[1]]
        frames.append(frame)
    return torch.stack(frames).reshape(T * H * W, D).to(dtype)


def _incremental(features, grid, config):
    T, H, W = grid
    memory = FluxMemory(config, (H, W))
    for t in range(T):
        memory.push(features[t * H * W : (t + 1) * H * W])
    return memory


def _assert_same(result, memory):
    assert torch.equal(result.keep, memory.keep_mask())
    index, kept = memory.kept_features()
    assert torch.equal(result.kept_index, index)
    assert torch.equal(result.kept_features(), kept)
    assert torch.equal(result.features[result.keep], kept)
    assert len(result.frames) == len(memory.frames)
    for ours, theirs in zip(result.frames, memory.frames):
        assert (ours.index, ours.tier) == (theirs.index, theirs.tier)
        for name in ("keep", "tas_dropped", "merged_into", "change_fraction"):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert (a is None) == (b is None), (ours.index, name)
            if a is not None:
                assert torch.equal(a, b), (ours.index, name)


def _random_cases(count):
    g = torch.Generator().manual_seed(1234)
    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    cases = []
    for i in range(count):
        H, W = draw(1, 5), draw(1, 6)
        if i % 7 == 0:
            H = 1  # single-row grids
        if i % 11 == 0:
            W = 1
        T, D = draw(1, 16), draw(2, 24)
        config = dict(short_frames=draw(2, 8), medium_frames=draw(0, 10))
        if i % 5 == 0:
            config["medium_frames"] = 0
        if i % 3 == 0:
            config["direct_drop_sim"] = None
        elif i % 3 == 1:
            config["direct_drop_sim"] = round(draw(50, 99) / 100, 2)
        if i % 4 == 0:
            config["pair_sim_threshold"] = round(draw(0, 99) / 100, 2)
        identical = (0.0, 0.0, 0.5, 1.0)[i % 4]
        dtype = torch.bfloat16 if i % 6 == 5 else torch.float32
        chunk = (None, 1, 2, 3)[draw(0, 3)]
        cases.append(pytest.param((T, H, W, D), config, identical, dtype, chunk, i, id=f"case{i}"))
    return cases


@pytest.mark.parametrize("shape,config,identical,dtype,chunk,seed", _random_cases(60))
def test_batched_compress_equals_incremental_memory(shape, config, identical, dtype, chunk, seed):
    T, H, W, D = shape
    features = _video(T, H, W, D, seed, identical=identical, dtype=dtype)
    before = features.clone()
    cfg = FluxMemConfig(**config)
    result = compress(features, (T, H, W), cfg, chunk_frames=chunk)
    _assert_same(result, _incremental(features, (T, H, W), cfg))
    assert torch.equal(features, before)  # never written to
    assert result.features.dtype == dtype


def test_identical_tokens_exercise_the_rounding_rule():
    """The random cases above do reach the "distance a hair below zero" branch and merges."""
    T, H, W, D = 12, 4, 6, 16
    features = _video(T, H, W, D, 3, identical=0.5)
    x = features.float().reshape(T, H * W, D)
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    distance = 1.0 - (unit[1:] * unit[:-1]).sum(-1)
    assert bool((distance < 0).any()) and bool((distance == 0).any())
    cfg = FluxMemConfig(short_frames=4, medium_frames=4)
    result = compress(features, (T, H, W), cfg)
    assert result.anchor_index.numel() > 0
    _assert_same(result, _incremental(features, (T, H, W), cfg))


@pytest.mark.parametrize("chunk", [1, 2, 5, None])
def test_chunking_changes_nothing_and_matches_the_literal_transcription(chunk):
    T, H, W, D = 11, 3, 4, 12
    features = _video(T, H, W, D, 8)
    case = dict(short_frames=4, medium_frames=6)
    result = compress(features, (T, H, W), FluxMemConfig(**case), chunk_frames=chunk)
    keep, merged = reference_compress(features, (T, H, W), **case)
    assert torch.equal(result.keep, keep)
    assert torch.equal(result.features, merged)
    with pytest.raises(InputError, match="chunk_frames"):
        compress(features, (T, H, W), FluxMemConfig(**case), chunk_frames=0)


def _clustered_result():
    T, H, W, D = 10, 4, 4, 8
    cells = torch.arange(H * W)
    region = (cells // W >= H // 2).long() * 2 + (cells % W >= W // 2).long()
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(4, D, generator=g)[region] + 0.05 * torch.randn(H * W, D, generator=g) for _ in range(T)]
    features = torch.stack(frames).reshape(T * H * W, D)
    result = compress(features, (T, H, W), FluxMemConfig(short_frames=2, medium_frames=4))
    assert result.anchor_index.numel() > 0
    return result, features


def test_merge_kept_writes_each_clusters_float32_mean_into_the_kept_rows():
    result, features = _clustered_result()
    _, H, W = result.grid_thw
    cells = H * W
    values = torch.randn(features.shape[0], 5, dtype=torch.float64).to(torch.bfloat16)  # any aligned tensor
    expected = values.clone()
    for record in result.frames:
        if record.merged_into is None:
            continue
        for anchor in record.anchors.nonzero().squeeze(1).tolist():
            members = (record.merged_into == anchor).nonzero().squeeze(1) + record.index * cells
            expected[record.index * cells + anchor] = values[members].float().mean(0).to(torch.bfloat16)
    kept = merge_kept(result, values)
    assert kept.dtype == torch.bfloat16
    assert torch.equal(kept, expected[result.keep])
    assert torch.equal(merge_full(result, values), expected)
    # the features themselves: the stored means, identical to recomputing them
    assert torch.equal(merge_kept(result, features), merge_kept(result, features.clone()))
    assert torch.equal(result.kept_features(), result.features[result.keep])
    # the per-frame record form (a streamed frame's record) gives the same means
    from types import SimpleNamespace

    index = next(r.index for r in result.frames if r.anchors is not None and bool(r.anchors.any()))
    one = SimpleNamespace(grid_thw=(1, H, W), frames=[result.frames[index]])
    frame_values = values[index * cells : (index + 1) * cells]
    assert torch.equal(merge_full(one, frame_values), expected[index * cells : (index + 1) * cells])
    with pytest.raises(InputError, match="rows of this video"):
        merge_kept(result, values[:-1])


def test_nothing_merged_means_no_copy():
    T, H, W, D = 5, 3, 3, 8
    features = _video(T, H, W, D, 2)
    result = compress(features, (T, H, W), FluxMemConfig(short_frames=12))
    assert result.anchor_index.numel() == 0
    assert result.features is features
    assert merge_full(result, features) is features
    assert {record.tier for record in result.frames} == {SHORT}
    result = compress(features, (T, H, W), FluxMemConfig(short_frames=2, medium_frames=20))
    assert {record.tier for record in result.frames} == {MID, SHORT} and result.features is features
    assert not any(record.tier == LONG for record in result.frames)
