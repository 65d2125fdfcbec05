"""``evs``: Efficient Video Sampling, the token set vLLM 0.32 keeps with ``--video-pruning-rate``.

Definition (``spec/memories.md``): the first frame stays whole; every later token is scored by
``1 - cos`` with the token in the same cell of the previous frame; the ``max(H*W, int(T*H*W *
(1 - rate)))`` highest scores stay (a stable descending sort: ties keep the earlier token). The
count is a global top-k over the video, so the method needs the whole video (no streaming form).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Rated

_FIRST_FRAME_SCORE = 255.0  # above any 1 - cos (<= 2): the first frame always stays


@dataclass(frozen=True)
class EVS(Rated):
    name = "evs"
    summary = "EVS as in vLLM 0.32: drop tokens most similar to the same cell one frame earlier (rate 0.5)."
    causal = False

    def count(self, grid_thw, *, temporal_patch_size: int) -> int:
        t, h, w = grid_thw
        return max(h * w, int(t * h * w * (1 - self.rate)))

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        t, h, w = grid_thw
        grid = features.detach().reshape(t, h, w, features.shape[-1])
        change = 1 - F.cosine_similarity(grid[1:], grid[:-1], dim=-1)
        first = torch.full_like(grid[:1, :, :, 0], _FIRST_FRAME_SCORE)
        scores = torch.cat([first, change]).reshape(-1)
        order = torch.sort(scores, descending=True, stable=True).indices
        keep = torch.zeros(scores.numel(), dtype=torch.bool, device=features.device)
        keep[order[: self.count(grid_thw, temporal_patch_size=temporal_patch_size)]] = True
        return keep
