"""``uniform:K``: every K-th temporal grid step, starting with the first (causal)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import WholeFrames, check_positive_int


@dataclass(frozen=True)
class Uniform(WholeFrames):
    name = "uniform"
    summary = "every K-th temporal grid step, the first one included (uniform:4)."
    positional = knob = "stride"

    stride: int = 4

    def __post_init__(self) -> None:
        check_positive_int(self, "stride", "grid steps")

    def frame_kept(self, index, steps, *, temporal_patch_size):
        return index % self.stride == 0

    def knob_values(self, grid_thw, *, temporal_patch_size):
        return range(1, grid_thw[0] + 1)
