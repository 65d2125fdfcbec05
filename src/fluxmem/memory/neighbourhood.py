"""Grid similarities: 3x3 neighbourhoods between adjacent frames, 8-neighbour edges within a frame.

All in float32 on the features' device, for any number of frames at once. Frames are normalised
into one zero-padded buffer (:class:`PaddedFrames`: a border of one cell around every frame, rows
padded to an even length), so that the 3x3 window of a cell in another frame, or in the same frame,
sits at a fixed distance in memory whatever the cell. Each row offset ``dh`` of the window is then
a batched matmul over every frame: blocks of two consecutive cells against the four cells of the
partner row around them (a 2x4 product, of which the three diagonals are the wanted cosines). It
runs slab by slab, all row offsets of a slab in turn, so that a slab is read from memory once and
from the cache for the other offsets. That computes 12 dot products per cell and frame pair
instead of the 9 needed, where a whole-row product would compute 96. One product serves both directions of a
frame pair (the later frame's ``d_prev`` and the earlier frame's ``sim_next``). The incremental
memory calls the same functions with one frame pair at the same offsets in its own buffer, so the
streaming and the offline paths compute bit-identical numbers with the same kernels.

Ties are decided by exact arithmetic, not by rounding: a cosine that float32 puts within
:data:`EXACT_BAND` of 1 is recomputed exactly (float64 sums of the float32 features, rounded once
to float32), so identical and exactly proportional tokens have a cosine of exactly 1 and a distance
of exactly 0 (a float32 dot product gives them rounding noise of a few 1e-7 either side). See
``docs/algorithm.md``, "Neighbourhood similarity".
"""

from __future__ import annotations

import math

import torch

BLOCK = 2
"""Cells per block of the batched window products (a 2x4 product per block and row offset)."""

EXACT_BAND = 2.0**-12
"""Cosines that float32 puts at or above ``1 - EXACT_BAND`` are recomputed exactly. The float32
dot product of two unit vectors of dimension ``D`` is off by at most about ``D * 2**-24`` (2.1e-4
for D = 3584), in practice a few 1e-7; every distance this band touches lies far inside Otsu's
first bin (1/64 wide), so no histogram changes."""

SLAB_BLOCKS = 32
"""Blocks per slab of the window products: a slab's 64 cells and the windows of all three row
offsets (about 2.6 MiB at D = 3584) stay in a 4 MiB cache while its products run."""

_NO_NEIGHBOUR = -2.0  # below every cosine: a window cell outside the grid never wins the max
_EXACT_ROWS = 1024  # candidate pairs recomputed at once (bounds the float64 working memory)


class PaddedFrames:
    """A float32 buffer of normalised frames ``x / max(||x||, 1e-8)``, zero-padded for windowed
    products.

    Frame ``slot`` occupies ``frame_cells`` consecutive rows starting at
    ``margin + slot * frame_cells``; in it, grid cell ``(h, w)`` is row ``(h + 1) * pitch + w + 1``
    (``pitch`` = ``W + 2`` rounded up to a multiple of :data:`BLOCK`), the border and the tail stay
    zero. ``frame_cells`` is a multiple of the block and of 64 bytes, so every frame has the same
    alignment and the same block boundaries in every buffer (the offline and the streaming paths
    then run the very same products). The margins keep every window inside the buffer.
    """

    def __init__(self, height: int, width: int, dim: int, frames: int, device: torch.device) -> None:
        self.height, self.width, self.dim, self.frames = height, width, dim, frames
        self.pitch, self.frame_cells, self.margin = self.geometry(height, width, dim)
        rows = 2 * self.margin + frames * self.frame_cells
        self.buffer = torch.zeros(rows, dim, dtype=torch.float32, device=device)
        grid = self.buffer[self.margin : self.margin + frames * self.frame_cells]
        padded = grid.view(frames, self.frame_cells, dim)[:, : (height + 2) * self.pitch]
        self._interior = padded.view(frames, height + 2, self.pitch, dim)[:, 1 : height + 1, 1 : width + 1]
        self._valid = _window_validity(height, width, device)
        self._products: dict = {}  # views of the slab products per frame range (see _row_dots)

    @staticmethod
    def geometry(height: int, width: int, dim: int) -> tuple[int, int, int]:
        """``(pitch, frame_cells, margin)`` in rows of ``dim`` float32 for an ``H x W`` grid."""
        pitch = -(-(width + 2) // BLOCK) * BLOCK
        step = math.lcm(BLOCK, 16 // math.gcd(dim, 16))  # 16 float32 = 64 bytes
        frame_cells = -(-((height + 2) * pitch) // step) * step
        margin = -(-(pitch + BLOCK + 1) // step) * step
        return pitch, frame_cells, margin

    @classmethod
    def frames_within(cls, height: int, width: int, dim: int, rows: int) -> int:
        """How many frames a buffer of at most ``rows`` rows holds (at least 1)."""
        _, frame_cells, margin = cls.geometry(height, width, dim)
        return max(1, (rows - 2 * margin) // frame_cells)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def load(self, features: torch.Tensor, slot: int = 0) -> None:
        """Normalise ``features`` (``[n*H*W, D]`` rows of ``n`` frames, any float dtype) into slots
        ``slot .. slot+n-1``, in float32."""
        count = features.shape[0] // (self.height * self.width)
        out = self._interior[slot : slot + count]
        x = features.reshape(count, self.height, self.width, self.dim)
        if x.dtype != torch.float32:
            out.copy_(x)  # the float32 values .float() would give, without a temporary
            x = out
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-8)
        torch.div(x, norm, out=out)

    def move(self, source: int, target: int) -> None:
        """Copy the normalised frame in slot ``source`` to slot ``target`` (exactly the values that
        loading it again would give, at a fraction of the cost)."""
        cells, margin = self.frame_cells, self.margin
        self.buffer[margin + target * cells : margin + (target + 1) * cells].copy_(
            self.buffer[margin + source * cells : margin + (source + 1) * cells]
        )

    def _row_dots(self, slot: int, partner_slot: int, count: int, offsets: tuple[int, ...]) -> list[torch.Tensor]:
        """For each row offset ``dh`` in ``offsets``, ``[count, H, W, 3]``: cosine of each cell of
        frames ``slot ..`` with the cells ``(h + dh, w + dw)``, ``dw`` = -1, 0, 1, of frames
        ``partner_slot ..`` (0 where that cell is outside the grid: mask it).

        The products run slab by slab (:data:`SLAB_BLOCKS` blocks), every offset of a slab one
        after the other, so that a slab's cells and their windows are read from memory once and
        from the cache for the other offsets. Each block's product is the same whatever the slab."""
        pitch, cells = self.pitch, self.frame_cells
        key = (slot, partner_slot, count, offsets)
        if key not in self._products:
            self._products[key] = self._slab_products(*key)
        grams, slabs = self._products[key]
        for current, windows, outs in slabs:
            for window, out in zip(windows, outs):
                torch.bmm(current, window, out=out)
        # [offsets, blocks, 2, 4]: cell i against window i .. i+3; the wanted cosines are 3 diagonals
        dots = torch.stack([torch.diagonal(grams, offset=k, dim1=2, dim2=3) for k in range(3)], dim=-1)
        dots = dots.reshape(len(offsets), count, cells, 3)[:, :, : (self.height + 2) * pitch]
        dots = dots.reshape(len(offsets), count, self.height + 2, pitch, 3)
        return list(dots[:, :, 1 : self.height + 1, 1 : self.width + 1].unbind(0))

    def _slab_products(self, slot: int, partner_slot: int, count: int, offsets: tuple[int, ...]):
        """``(grams, slabs)`` for :meth:`_row_dots`: the output ``[offsets, blocks, 2, 4]`` and, per
        slab, the views ``(cells, [windows transposed], [outputs])`` (made once per buffer and
        frame range: the buffer never moves)."""
        d, pitch, cells = self.dim, self.pitch, self.frame_cells
        flat = self.buffer.view(-1)
        blocks = count * cells // BLOCK
        first = self.margin + slot * cells
        grams = self.buffer.new_empty(len(offsets), blocks, BLOCK, BLOCK + 2)
        slabs = []
        for start in range(0, blocks, SLAB_BLOCKS):
            size = min(SLAB_BLOCKS, blocks - start)
            cell = first + start * BLOCK
            current = flat.as_strided((size, BLOCK, d), (BLOCK * d, d, 1), cell * d)
            windows = [
                flat.as_strided((size, BLOCK + 2, d), (BLOCK * d, d, 1), (cell + (partner_slot - slot) * cells - 1 + dh * pitch) * d)
                .transpose(1, 2)
                for dh in offsets
            ]
            slabs.append((current, windows, [grams[k, start : start + size] for k in range(len(offsets))]))
        return grams, slabs

    def window_dots(self, slot: int, partner_slot: int, count: int) -> torch.Tensor:
        """``[count, H, W, 9]``: cosine of each cell of frames ``slot ..`` with every cell of its
        3x3 window in frames ``partner_slot ..`` (frame ``slot + k`` against ``partner_slot + k``),
        window position ``(dh + 1) * 3 + (dw + 1)``; -2 where the window leaves the grid."""
        dots = torch.cat(self._row_dots(slot, partner_slot, count, (-1, 0, 1)), dim=-1)
        return dots.masked_fill_(~self._valid, _NO_NEIGHBOUR)

    def edge_cosines(self, slot: int, count: int) -> torch.Tensor:
        """``[count, E]``: cosine of every 8-neighbour edge of frames ``slot ..``, in
        :class:`EdgeLayout` order."""
        same, below = self._row_dots(slot, slot, count, (0, 1))
        right = same[..., 2]
        w = self.width
        parts = [
            right[:, :, : w - 1],  # (h, w)-(h, w+1)
            below[:, :-1, :, 1],  # (h, w)-(h+1, w)
            below[:, :-1, : w - 1, 2],  # (h, w)-(h+1, w+1)
            below[:, :-1, 1:, 0],  # (h, w)-(h+1, w-1)
        ]
        return torch.cat([p.reshape(count, -1) for p in parts], dim=1)


def _window_validity(height: int, width: int, device: torch.device) -> torch.Tensor:
    """bool ``[H, W, 9]``: whether window position ``(dh, dw)`` of each cell lies inside the grid."""
    rows = torch.arange(height, device=device).view(-1, 1, 1)
    cols = torch.arange(width, device=device).view(1, -1, 1)
    offsets = torch.tensor([-1, 0, 1], device=device)
    dh, dw = offsets.repeat_interleave(3).view(1, 1, 9), offsets.repeat(3).view(1, 1, 9)
    return (rows + dh >= 0) & (rows + dh < height) & (cols + dw >= 0) & (cols + dw < width)


def settle_near_one(dots: torch.Tensor, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Replace, in place, the window cosines of ``dots`` (``[n, H, W, 9]``, from
    :meth:`PaddedFrames.window_dots`) that lie within :data:`EXACT_BAND` of 1 by their exact value.

    ``current`` and ``previous``: the raw features ``[n*H*W, D]`` of the frames the cells and their
    windows belong to. Exact: ``x . y / (max(||x||, 1e-8) * max(||y||, 1e-8))`` with float64 sums
    of the float32 values (products of two float32 numbers are exact in float64), rounded once to
    float32. Costs nothing where no cosine is that close to 1 (one check); on a still scene it
    recomputes one pair per cell.
    """
    near = dots >= 1.0 - EXACT_BAND
    if not bool(near.any()):  # the host check: recomputing is the rare case
        return dots
    _, height, width, _ = dots.shape
    frame, row, col, position = near.nonzero(as_tuple=True)
    cell = (frame * height + row) * width + col
    partner = cell + (position // 3 - 1) * width + (position % 3 - 1)
    exact = torch.cat([
        exact_cosine(current.index_select(0, cell[i : i + _EXACT_ROWS]), previous.index_select(0, partner[i : i + _EXACT_ROWS]))
        for i in range(0, cell.numel(), _EXACT_ROWS)
    ])
    dots[frame, row, col, position] = exact
    return dots


def exact_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of ``a`` and ``b`` (``[N, D]``) to float32 precision: float64 sums, one
    rounding to float32 at the end."""
    a, b = a.detach().double(), b.detach().double()
    norms = torch.linalg.vector_norm(a, dim=-1).clamp_min(1e-8) * torch.linalg.vector_norm(b, dim=-1).clamp_min(1e-8)
    return ((a * b).sum(-1) / norms).float()


def window_maxima(dots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sim_to_previous, sim_to_next)``, both ``[n, H, W]``, from the window cosines ``dots``
    of frame pairs (``[n, H, W, 9]``: cells of the later frame against the earlier one).

    For each cell of the later frame, the best match in the earlier frame around the same cell;
    for each cell of the earlier frame, the best match in the later frame (the same products, read
    from the other side). On full grids every cell has its centre neighbour, so both are defined
    everywhere."""
    frames, height, width, _ = dots.shape
    before = dots.amax(dim=-1)
    padded = dots.new_full((frames, height + 2, width + 2, 9), _NO_NEIGHBOUR)
    padded[:, 1 : height + 1, 1 : width + 1] = dots
    # cell p of the earlier frame is window position (dh, dw) of the later frame's cell p - (dh, dw)
    seen_from = [
        padded[:, 1 - dh : 1 - dh + height, 1 - dw : 1 - dw + width, (dh + 1) * 3 + dw + 1]
        for dh in (-1, 0, 1)
        for dw in (-1, 0, 1)
    ]
    return before, torch.stack(seen_from, dim=-1).amax(dim=-1)


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
