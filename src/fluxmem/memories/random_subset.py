"""``random``: a seeded random subset of the visual tokens (the floor any method must beat)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Rated


@dataclass(frozen=True)
class RandomSubset(Rated):
    name = "random"
    summary = "a seeded random subset of int(T*H*W * (1 - rate)) tokens, at least one (rate 0.5, seed 0)."
    causal = False  # the subset is drawn over the whole video

    seed: int = 0

    def count(self, grid_thw, *, temporal_patch_size: int) -> int:
        t, h, w = grid_thw
        return max(1, int(t * h * w * (1 - self.rate)))

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        total = features.shape[0]
        order = torch.randperm(total, generator=torch.Generator().manual_seed(int(self.seed)))
        keep = torch.zeros(total, dtype=torch.bool)
        keep[order[: self.count(grid_thw, temporal_patch_size=temporal_patch_size)]] = True
        return keep.to(features.device)
