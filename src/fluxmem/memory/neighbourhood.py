"""Grid similarities: 3x3 neighbourhoods between adjacent frames, 8-neighbour edges within a frame.

All in float32 on the features' device. Each row of a frame is multiplied with the (up to three)
rows around it in one batched matmul and the needed diagonals are read off: this keeps every
operand in cache and is faster than elementwise products on CPU and GPU alike. One matmul serves
both directions of a frame pair (the later frame's ``d_prev`` and the earlier frame's ``sim_next``).
"""

from __future__ import annotations

import torch


def normalise(features: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """``x / max(||x||, 1e-8)`` in float32, shaped ``[H, W, D]``.

    Cosines are then plain dot products, exactly the formula of ``algorithm.md``: the rounding of
    identical tokens (a distance a hair below zero counts as undefined) follows the spec's order
    of operations.
    """
    x = features.float().reshape(grid_hw[0], grid_hw[1], -1)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _band(size: int, offset: int) -> tuple[slice, slice]:
    """Index ranges ``a`` and ``b = a + offset`` that both stay inside ``[0, size)``."""
    return slice(max(0, -offset), size - max(0, offset)), slice(max(0, offset), size - max(0, -offset))


def adjacent_similarity(current: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max cosine over 3x3 windows between two consecutive normalised frames ``[H, W, D]``.

    Returns ``(sim_to_previous, sim_to_next)``, both ``[H, W]``: for each cell of ``current`` the
    best match in ``previous`` around the same cell, and for each cell of ``previous`` the best
    match in ``current``. On full grids every cell has its centre neighbour, so both are defined
    everywhere.
    """
    height, width, _ = current.shape
    sim_prev = current.new_full((height, width), -2.0)
    sim_next = current.new_full((height, width), -2.0)
    for dh in (-1, 0, 1):
        rows_a, rows_b = _band(height, dh)
        if rows_a.start >= rows_a.stop:
            continue
        gram = torch.bmm(current[rows_a], previous[rows_b].transpose(1, 2))  # [h, W, W]
        for dw in (-1, 0, 1):
            cols_a, cols_b = _band(width, dw)
            if cols_a.start >= cols_a.stop:
                continue
            # gram[r, j, j + dw]: current cell (r, j) against previous cell (r + dh, j + dw)
            dots = torch.diagonal(gram, offset=dw, dim1=1, dim2=2)
            torch.maximum(sim_prev[rows_a, cols_a], dots, out=sim_prev[rows_a, cols_a])
            torch.maximum(sim_next[rows_b, cols_b], dots, out=sim_next[rows_b, cols_b])
    return sim_prev, sim_next


class EdgeLayout:
    """The 8-neighbour edges of an ``H x W`` grid, each listed once, in a fixed order.

    Order: right edges ``(h, w)-(h, w+1)``, then down ``(h, w)-(h+1, w)``, down-right
    ``(h, w)-(h+1, w+1)``, down-left ``(h, w)-(h+1, w-1)``, each in raster order of ``(h, w)``.
    """

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        self.height, self.width = height, width
        cells = torch.arange(height * width, device=device).reshape(height, width)
        self.u = torch.cat(
            [cells[:, :-1].reshape(-1), cells[:-1, :].reshape(-1), cells[:-1, :-1].reshape(-1), cells[:-1, 1:].reshape(-1)]
        )
        self.v = torch.cat(
            [cells[:, 1:].reshape(-1), cells[1:, :].reshape(-1), cells[1:, 1:].reshape(-1), cells[1:, :-1].reshape(-1)]
        )

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of every edge, in :attr:`u`/:attr:`v` order, from a normalised frame ``[H, W, D]``."""
        parts = [x.new_empty(0)]
        if self.width > 1:
            same_row = torch.bmm(x, x.transpose(1, 2))  # [H, W, W]
            parts.append(torch.diagonal(same_row, offset=1, dim1=1, dim2=2).reshape(-1))
        if self.height > 1:
            next_row = torch.bmm(x[:-1], x[1:].transpose(1, 2))  # [H-1, W, W]
            for offset in (0, 1, -1):
                parts.append(torch.diagonal(next_row, offset=offset, dim1=1, dim2=2).reshape(-1))
        return torch.cat(parts)
