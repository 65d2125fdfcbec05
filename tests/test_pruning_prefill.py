"""``prune_prefill`` shrinks the sequence without full-size copies and writes the same merged,
kept embeddings as selecting rows of the full merged tensor."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fluxmem.adapters import registry
from fluxmem.adapters.base import PreparedInputs
from fluxmem.adapters.pruning import prune_prefill
from fluxmem.memory import FluxMemConfig, compress
from fluxmem.testing import build_tiny_qwen2_5_vl

CONFIG = FluxMemConfig(short_frames=4, medium_frames=4)


class LargestAllocation(TorchDispatchMode):
    """The largest tensor storage any op creates while active (views and in-place results excluded)."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, tensor.untyped_storage().nbytes())
        return out


@pytest.fixture(scope="module")
def adapter():
    model, _ = build_tiny_qwen2_5_vl()
    return registry.adapter_for(model)


def _batch(adapter, lengths_before, steps, grid_hw, dim, padding="left"):
    """Two samples, each ``text video text`` with a redundant video, padded on ``padding``."""
    g = torch.Generator().manual_seed(0)
    cells = grid_hw[0] * grid_hw[1]
    rows, videos = [], []
    for before, t in zip(lengths_before, steps):
        ids = [300] * before + [adapter.video_token_id] * (t * cells) + [301] * 3
        rows.append(ids)
        scene = torch.randn(cells, dim, generator=g)
        frames, current = [], scene
        for _ in range(t):
            changed = torch.rand(cells, 1, generator=g) < 0.3
            current = torch.where(changed, torch.randn(cells, dim, generator=g), current)
            region = torch.arange(cells) // 2  # pairs of equal cells: SDC merges them
            frames.append(current[region] + 0.01 * torch.randn(cells, dim, generator=g))
        videos.append(torch.cat(frames))
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), 302, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for b, ids in enumerate(rows):
        where = slice(length - len(ids), length) if padding == "left" else slice(0, len(ids))
        input_ids[b, where] = torch.tensor(ids)
        mask[b, where] = 1
    embeds = torch.randn(len(rows), length, dim, generator=g)
    features = torch.cat(videos)
    embeds[input_ids == adapter.video_token_id] = features
    positions = torch.arange(length).expand(3, len(rows), -1).clone()
    merge = adapter.spatial_merge_size
    grids = torch.tensor([[t, grid_hw[0] * merge, grid_hw[1] * merge] for t in steps])
    return input_ids, mask, grids, PreparedInputs(embeds, positions, None, features, extras={})


@pytest.mark.parametrize("padding", ["left", "right"])
def test_pruned_embeddings_are_the_kept_rows_of_the_merged_sequence(adapter, padding):
    grid_hw, dim = (3, 4), adapter.model.config.text_config.hidden_size
    input_ids, mask, grids, prepared = _batch(adapter, [4, 9], [10, 12], grid_hw, dim, padding)
    pruned = prune_prefill(adapter, prepared, input_ids, mask, grids, CONFIG)
    assert any(result.anchor_index.numel() for _, result in pruned.results)  # merges are exercised
    offset = 0
    for b in range(2):
        expected = prepared.inputs_embeds[b].clone()
        where = (input_ids[b] == adapter.video_token_id).nonzero().squeeze(1)
        result = compress(prepared.video_features[offset : offset + where.numel()], (grids[b, 0].item(), *grid_hw), CONFIG)
        offset += where.numel()
        expected[where] = result.features
        keep = mask[b].bool().clone()
        keep[where] &= result.keep
        slots = pruned.attention_mask[b].bool()
        assert torch.equal(pruned.kept_index[b, slots], keep.nonzero().squeeze(1))
        assert torch.equal(pruned.inputs_embeds[b, slots], expected[keep])
        assert bool((pruned.inputs_embeds[b, ~slots] == 0).all())
    assert not torch.equal(pruned.attention_mask[0], pruned.attention_mask[1])  # padding is exercised


def test_prune_prefill_allocates_nothing_of_the_full_size(adapter):
    grid_hw, dim = (3, 4), adapter.model.config.text_config.hidden_size
    input_ids, mask, grids, prepared = _batch(adapter, [4, 9], [24, 24], grid_hw, dim)
    with LargestAllocation() as counter:
        pruned = prune_prefill(adapter, prepared, input_ids, mask, grids, CONFIG)
    full = prepared.inputs_embeds.untyped_storage().nbytes()
    assert pruned.inputs_embeds.untyped_storage().nbytes() < full / 2  # the video was pruned hard
    # the largest working tensor is the kept-size output or the memory's normalised frames of one
    # video (float32, at most 64 MiB at real sizes); nothing of the whole input's size
    one_video = 24 * 12 * dim * 4
    assert counter.largest <= max(pruned.inputs_embeds.untyped_storage().nbytes(), one_video)
    assert counter.largest < full
