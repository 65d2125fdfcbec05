"""``vidcom2``: VidCom² (Liu et al., EMNLP 2025), the token set vLLM 0.32 keeps with
``--video-pruning-rate`` for models that use it.

Definition (``spec/memories.md``): tokens are compared in the half of the channels with the lowest
variance over the video, L2-normalised; a token's redundancy is the sum, over Gaussian bandwidths
``2^-3 .. 2^1``, of its similarity ``exp(-d^2 / 2a)`` to the video's mean token plus to its frame's
mean token. Frames that differ most from the video get a larger share: per-frame budgets are
``round(cells * min(1, (1 - rate) * (1 + p - mean(p))))`` (at least 1), ``p`` the softmax over
frames of minus their mean video similarity at temperature 0.01; each frame keeps its least
redundant tokens, then the total is reconciled to exactly ``max(T, int(T*H*W * (1 - rate)))`` by
dropping the most redundant kept tokens or adding the least redundant dropped ones. Budgets
depend on every frame, so the method needs the whole video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Rated

_BANDWIDTHS = tuple(2.0**k for k in range(-3, 2))
_CHANNEL_SHARE = 0.5
_TEMPERATURE = 0.01


def _redundancy(tokens: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    squared = (tokens - centre).pow(2).sum(-1)
    return sum(torch.exp(-squared / (2.0 * a)) for a in _BANDWIDTHS)


@dataclass(frozen=True)
class VidCom2(Rated):
    name = "vidcom2"
    summary = "VidCom² as in vLLM 0.32: per-frame budgets by frame distinctiveness, least redundant tokens kept (rate 0.5)."
    causal = False

    def count(self, grid_thw, *, temporal_patch_size: int) -> int:
        t, h, w = grid_thw
        return max(t, min(int(t * h * w * (1.0 - self.rate)), t * h * w))

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        t, h, w = grid_thw
        cells = h * w
        x = features.detach()
        channels = torch.topk(x.var(dim=0, unbiased=False), k=max(1, int(x.shape[-1] * _CHANNEL_SHARE)), largest=False).indices
        frames = F.normalize(x.index_select(-1, channels).view(t, cells, -1), dim=-1)
        to_video = _redundancy(frames, frames.mean(dim=(0, 1), keepdim=True))
        redundancy = to_video + _redundancy(frames, frames.mean(dim=1, keepdim=True))  # [T, cells]

        distinct = -to_video.mean(dim=-1)
        share = F.softmax((distinct - distinct.max()) / _TEMPERATURE, dim=0)
        scale = ((1.0 - self.rate) * (1.0 + share - share.mean())).clamp(max=1.0)
        budgets = (scale * cells).round().long().clamp(min=1, max=cells).tolist()
        keep = torch.zeros(t, cells, dtype=torch.bool, device=features.device)
        for frame, budget in enumerate(budgets):
            keep[frame, torch.topk(redundancy[frame], k=budget, largest=False, sorted=False).indices] = True

        keep, scores = keep.view(-1), redundancy.view(-1)
        target, held = self.count(grid_thw, temporal_patch_size=temporal_patch_size), sum(budgets)
        if held > target:
            kept = keep.nonzero().squeeze(-1)
            keep[kept[torch.topk(scores[kept], k=held - target, largest=True, sorted=False).indices]] = False
        elif held < target:
            free = (~keep).nonzero().squeeze(-1)
            extra = min(target - held, free.numel())
            keep[free[torch.topk(scores[free], k=extra, largest=False, sorted=False).indices]] = True
        return keep
