"""Grid similarities: 3x3 neighbourhoods between adjacent frames, 8-neighbour edges within a frame.

All in float32 on the features' device. Each row of a frame is multiplied with the (up to three)
rows around it in one batched matmul and the needed diagonals are read off: this keeps every
operand in cache and is faster than elementwise products on CPU and GPU alike. One matmul serves
both directions of a frame pair (the later frame's ``d_prev`` and the earlier frame's ``sim_next``).
"""

from __future__ import annotations

import torch


def as_grid(features: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, norms)``: the frame in float32 shaped ``[H, W, D]`` (no copy when it already is
    float32) and ``max(||x||, 1e-8)`` per cell, ``[H, W]``.

    Cosines are taken as ``x_i . x_j / (norm_i * norm_j)``: the same quantity as the dot product
    of the normalised vectors, without writing a normalised copy of every frame.
    """
    x = features.float().reshape(grid_hw[0], grid_hw[1], -1)
    return x, x.norm(dim=-1).clamp_min(1e-8)


def _band(size: int, offset: int) -> tuple[slice, slice]:
    """Index ranges ``a`` and ``b = a + offset`` that both stay inside ``[0, size)``."""
    return slice(max(0, -offset), size - max(0, offset)), slice(max(0, offset), size - max(0, -offset))


def adjacent_similarity(
    current: tuple[torch.Tensor, torch.Tensor], previous: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max cosine over 3x3 windows between two consecutive frames, each given as :func:`as_grid`.

    Returns ``(sim_to_previous, sim_to_next)``, both ``[H, W]``: for each cell of ``current`` the
    best match in ``previous`` around the same cell, and for each cell of ``previous`` the best
    match in ``current``. On full grids every cell has its centre neighbour, so both are defined
    everywhere.
    """
    (cur, cur_norm), (prev, prev_norm) = current, previous
    height, width, _ = cur.shape
    sim_prev = cur.new_full((height, width), -2.0)
    sim_next = cur.new_full((height, width), -2.0)
    for dh in (-1, 0, 1):
        rows_a, rows_b = _band(height, dh)
        if rows_a.start >= rows_a.stop:
            continue
        gram = torch.bmm(cur[rows_a], prev[rows_b].transpose(1, 2))  # [h, W, W]
        gram /= cur_norm[rows_a].unsqueeze(2) * prev_norm[rows_b].unsqueeze(1)
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

    def cosines(self, frame: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Cosine of every edge, in :attr:`u`/:attr:`v` order, of a frame given as :func:`as_grid`."""
        x, norm = frame
        parts = [x.new_empty(0)]
        if self.width > 1:
            same_row = torch.bmm(x, x.transpose(1, 2))  # [H, W, W]
            same_row /= norm.unsqueeze(2) * norm.unsqueeze(1)
            parts.append(torch.diagonal(same_row, offset=1, dim1=1, dim2=2).reshape(-1))
        if self.height > 1:
            next_row = torch.bmm(x[:-1], x[1:].transpose(1, 2))  # [H-1, W, W]
            next_row /= norm[:-1].unsqueeze(2) * norm[1:].unsqueeze(1)
            for offset in (0, 1, -1):
                parts.append(torch.diagonal(next_row, offset=offset, dim1=1, dim2=2).reshape(-1))
        return torch.cat(parts)
