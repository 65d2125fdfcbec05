"""Positions of a method that feeds its kept steps as the video (``restarts_video``: ``recent:N``).

Every other method leaves positions alone: kept tokens keep their original M-RoPE positions. The
drop-in switch and the vLLM plugin both call :func:`restart_video`, so the two number alike.
"""

from __future__ import annotations

import torch


def restart_video(positions: torch.Tensor, rows: torch.Tensor, kept: torch.Tensor) -> bool:
    """Number a video's kept tokens as the video's first tokens, in place.

    ``positions``: ``[3, L]`` M-RoPE positions of one sequence holding every token of the video;
    ``rows``: long ``[T*H*W]``, the video's token indices in that sequence (one block, ascending);
    ``kept``: long ``[K]``, indices into ``rows`` of the kept tokens (whole grid steps, in order).
    The kept tokens take the positions of the first ``K``; text after the video follows it when it
    was numbered from the video's largest position (else it stays, as models that number text
    from the grid size do). Returns False, changing nothing, when the video is not one block.
    """
    if rows.numel() == 0 or int(rows[-1] - rows[0]) + 1 != rows.numel():
        return False
    old = positions[:, rows].clone()
    old_max = int(old.max())
    positions[:, rows[kept]] = old[:, : kept.numel()]
    new_max = int(positions[:, rows[kept]].max()) if kept.numel() else int(old.min()) - 1
    after = int(rows[-1]) + 1
    if after < positions.shape[1] and bool((positions[:, after] == old_max + 1).all()):
        positions[:, after:] -= old_max - new_max
    return True
