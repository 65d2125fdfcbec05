"""``none``: every visual token (the stock model)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import WholeFrames


@dataclass(frozen=True)
class KeepAll(WholeFrames):
    name = "none"
    summary = "every visual token (the stock model, no memory)."

    def frame_kept(self, index, steps, *, temporal_patch_size):
        return True
