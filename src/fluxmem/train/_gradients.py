"""Gradient-safe memory for training: decisions without autograd, merges with it.

The memory's decisions (which tokens stay, which cells merge into which anchor) are discrete and
need no gradient, and parts of them use in-place ``out=`` kernels that autograd refuses when the
visual features require grad (vision tower or merger being trained). Here the memory runs on
detached features; then the one differentiable thing it does, replacing each long-term anchor by
the mean of its cluster, is recomputed on the live features with the same arithmetic, so the
forward values are unchanged and gradients reach every kept token, anchors included.
"""

from __future__ import annotations

import contextlib
import threading

import torch

from ..memory import CompressResult, compress

_lock = threading.Lock()
_depth = 0
_original = None


def compress_with_gradients(features: torch.Tensor, grid_thw, config=None, *, temporal_patch_size: int = 2) -> CompressResult:
    """:func:`fluxmem.memory.compress`, differentiable with respect to ``features``."""
    if not (torch.is_grad_enabled() and features.requires_grad):
        return compress(features, grid_thw, config, temporal_patch_size=temporal_patch_size)
    with torch.no_grad():
        result = compress(features.detach(), grid_thw, config, temporal_patch_size=temporal_patch_size)
    cells = result.grid_thw[1] * result.grid_thw[2]
    merged = features
    for index, record in enumerate(result.frames):
        merged_into = record.merged_into
        if merged_into is None or not bool((merged_into >= 0).any()):
            continue
        members = (merged_into >= 0).nonzero().squeeze(1)
        anchor_of_member = merged_into.index_select(0, members)
        anchors, member_cluster = torch.unique(anchor_of_member, return_inverse=True)
        frame = features[index * cells : (index + 1) * cells].float()
        sums = torch.zeros(anchors.numel(), frame.shape[1], dtype=torch.float32, device=frame.device)
        sums = sums.index_add(0, member_cluster, frame.index_select(0, members))
        sizes = torch.bincount(member_cluster, minlength=anchors.numel()).unsqueeze(1).float()
        means = (sums / sizes).to(features.dtype)
        merged = merged.index_copy(0, anchors + index * cells, means)
    return CompressResult(keep=result.keep, features=merged, frames=result.frames, grid_thw=result.grid_thw)


@contextlib.contextmanager
def gradient_safe_memory():
    """Within this block the FluxMem switch prunes with :func:`compress_with_gradients`.

    The switch's pruning step looks ``compress`` up in ``fluxmem.adapters.pruning``; it is
    swapped there for the duration (re-entrant, restored on exit). Calls without gradients
    behave exactly as before, so other models in the process are unaffected.
    """
    global _depth, _original
    from ..adapters import pruning

    with _lock:
        if _depth == 0:
            _original = pruning.compress
            pruning.compress = compress_with_gradients
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                pruning.compress = _original
                _original = None
