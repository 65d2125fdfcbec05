"""Grid similarities: 3x3 neighbourhoods between adjacent frames, 8-neighbour edges within a frame.

All in float32 on the features' device, for any number of frames at once. Frames are seen as one
sequence of grid rows ``[n*H, W, D]`` (a view, no copy): row ``r`` of a frame meets row ``r + dh``
of the other frame at a fixed distance in that sequence, so each of the three row offsets is ONE
batched matmul over all frames, and the needed diagonals are read off (this keeps every operand in
cache and is faster than elementwise products on CPU and GPU alike). One matmul serves both
directions of a frame pair (the later frame's ``d_prev`` and the earlier frame's ``sim_next``).
The incremental memory calls the same functions with one frame, so the streaming and the offline
paths compute the same numbers with the same kernels.
"""

from __future__ import annotations

import torch


def normalise(features: torch.Tensor, grid_hw: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x / max(||x||, 1e-8)`` in float32, shaped ``[n, H, W, D]`` (``n`` frames of ``H*W`` rows).

    Cosines are then plain dot products, exactly the formula of ``algorithm.md``: the rounding of
    identical tokens (a distance a hair below zero counts as undefined) follows the spec's order
    of operations. ``out``: a float32 buffer of at least ``features.shape[0]`` rows to write into
    (the same values; saves a fresh allocation per call when a long video is walked in chunks).
    """
    shape = (-1, grid_hw[0], grid_hw[1], features.shape[-1])
    if out is not None and features.dtype != torch.float32:
        out[: features.shape[0]].copy_(features)  # the float32 values .float() would give
        x = out[: features.shape[0]].reshape(shape)
    else:
        x = features.float().reshape(shape)  # float32 input: the input itself, no copy
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    if out is None:
        return x / norm
    return torch.div(x, norm, out=out[: features.shape[0]].reshape(shape))


def _band(size: int, offset: int) -> tuple[slice, slice]:
    """Index ranges ``a`` and ``b = a + offset`` that both stay inside ``[0, size)``."""
    return slice(max(0, -offset), size - max(0, offset)), slice(max(0, offset), size - max(0, -offset))


def adjacent_similarity(current: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max cosine over 3x3 windows between pairs of normalised frames ``[n, H, W, D]``: frame ``k``
    of ``current`` follows frame ``k`` of ``previous``.

    Returns ``(sim_to_previous, sim_to_next)``, both ``[n, H, W]``: for each cell of ``current``
    the best match in ``previous`` around the same cell, and for each cell of ``previous`` the
    best match in ``current``. On full grids every cell has its centre neighbour, so both are
    defined everywhere.
    """
    frames, height, width, dim = current.shape
    rows = frames * height
    cur = current.reshape(rows, width, dim)
    prev = previous.reshape(rows, width, dim)
    row_in_frame = torch.arange(rows, device=current.device) % height
    sim_prev = current.new_full((rows, width), -2.0)
    sim_next = current.new_full((rows, width), -2.0)
    for dh in (-1, 0, 1):
        rows_a, rows_b = _band(rows, dh)
        if rows_a.start >= rows_a.stop:
            continue
        # current row i against previous row i + dh; rows whose partner lies in another frame are masked
        gram = torch.bmm(cur[rows_a], prev[rows_b].transpose(1, 2))  # [R, W, W]
        partner = row_in_frame[rows_a] + dh
        outside = ((partner < 0) | (partner >= height)).unsqueeze(1) if frames > 1 and dh else None
        for dw in (-1, 0, 1):
            cols_a, cols_b = _band(width, dw)
            if cols_a.start >= cols_a.stop:
                continue
            # gram[r, j, j + dw]: current cell (r, j) against previous cell (r + dh, j + dw)
            dots = torch.diagonal(gram, offset=dw, dim1=1, dim2=2)
            if outside is not None:
                dots = dots.masked_fill(outside, -2.0)
            torch.maximum(sim_prev[rows_a, cols_a], dots, out=sim_prev[rows_a, cols_a])
            torch.maximum(sim_next[rows_b, cols_b], dots, out=sim_next[rows_b, cols_b])
    return sim_prev.reshape(frames, height, width), sim_next.reshape(frames, height, width)


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

    @property
    def count(self) -> int:
        return int(self.u.numel())

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of every edge, ``[n, E]`` in :attr:`u`/:attr:`v` order, from normalised frames
        ``[n, H, W, D]``."""
        frames, height, width, dim = x.shape
        rows = x.reshape(frames * height, width, dim)
        parts = [x.new_empty(frames, 0)]
        if width > 1:
            same_row = torch.bmm(rows, rows.transpose(1, 2))  # [n*H, W, W]
            parts.append(torch.diagonal(same_row, offset=1, dim1=1, dim2=2).reshape(frames, -1))
        if height > 1:
            # row i against row i + 1 over the whole sequence; the pair that crosses frames is dropped
            next_row = torch.bmm(rows[:-1], rows[1:].transpose(1, 2))  # [n*H - 1, W, W]
            for offset in (0, 1, -1):
                dots = torch.diagonal(next_row, offset=offset, dim1=1, dim2=2)  # [n*H - 1, W']
                dots = torch.cat([dots, dots.new_empty(1, dots.shape[1])])  # pad: one row per frame row
                parts.append(dots.reshape(frames, height, -1)[:, : height - 1].reshape(frames, -1))
        return torch.cat(parts, dim=1)
