"""``recent:N``: only the newest N raw frames, as SimpleStream feeds Qwen-VL (N = 4 at 1 fps)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import WholeFrames, check_positive_int


@dataclass(frozen=True)
class Recent(WholeFrames):
    name = "recent"
    summary = "only the newest N raw frames, fed as the video (SimpleStream; recent:4 at 1 fps)."
    positional = knob = "frames"
    restarts_video = True

    frames: int = 4

    def __post_init__(self) -> None:
        check_positive_int(self, "frames", "raw frames")

    def steps(self, temporal_patch_size: int) -> int:
        if self.frames % temporal_patch_size:
            raise ConfigError(
                f"recent:{self.frames} must count whole temporal grid steps: this model merges {temporal_patch_size} "
                f"raw frames per step; use a multiple of {temporal_patch_size}."
            )
        return self.frames // temporal_patch_size

    def check(self, *, temporal_patch_size):
        self.steps(temporal_patch_size)

    def frame_kept(self, index, steps, *, temporal_patch_size):
        return index >= steps - self.steps(temporal_patch_size)

    def horizon(self, *, temporal_patch_size):
        return self.steps(temporal_patch_size)

    def knob_values(self, grid_thw, *, temporal_patch_size):
        return range(temporal_patch_size, grid_thw[0] * temporal_patch_size + 1, temporal_patch_size)
