"""The FluxMem hierarchy: short-term, mid-term (TAS), long-term (SDC), one grid step at a time.

:class:`FluxMemory` is the only implementation; :func:`compress` runs it over a whole video. Both
the offline switch and the streaming session therefore make the same decisions by construction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ..errors import InputError
from .config import FluxMemConfig
from .neighbourhood import EdgeLayout, adjacent_similarity, normalise
from .otsu import otsu_threshold

SHORT, MID, LONG = "short", "mid", "long"


@dataclass
class FrameRecord:
    """What the memory did to one temporal grid step (a "frame").

    Masks are over the frame's ``H*W`` cells in raster order.
    """

    index: int
    tier: str = SHORT
    keep: torch.Tensor | None = None
    """Cells currently kept; ``None`` while the frame is whole (short-term)."""
    tas_dropped: torch.Tensor | None = None
    """Cells TAS dropped when the frame left short-term."""
    merged_into: torch.Tensor | None = None
    """For cells SDC merged (clusters of >= 2 cells): the cell index of their anchor, the anchor
    pointing to itself; -1 elsewhere. Set when the frame entered long-term."""
    change_fraction: torch.Tensor | None = None
    """Share of cells whose distance to the previous frame is at or above that frame's Otsu
    threshold (the proactive scene-change signal); ``None`` for the first frame."""

    @property
    def sdc_dropped(self) -> torch.Tensor | None:
        """Cells SDC merged away (members of a cluster other than its anchor)."""
        if self.merged_into is None:
            return None
        cells = torch.arange(self.merged_into.numel(), device=self.merged_into.device)
        return (self.merged_into >= 0) & (self.merged_into != cells)

    @property
    def anchors(self) -> torch.Tensor | None:
        """Cells that carry their cluster's mean."""
        if self.merged_into is None:
            return None
        cells = torch.arange(self.merged_into.numel(), device=self.merged_into.device)
        return self.merged_into == cells

    def kept_tokens(self, cells: int) -> int:
        return cells if self.keep is None else int(self.keep.sum())


@dataclass
class StepUpdate:
    """What one :meth:`FluxMemory.push` changed."""

    frame_index: int
    entered_mid: int | None = None
    """Frame that left short-term (TAS ran on it)."""
    entered_long: int | None = None
    """Frame that left mid-term (SDC ran on it); it and every earlier frame are final."""
    change_fraction: torch.Tensor | None = None


@dataclass
class _Frame:
    record: FrameRecord
    features: torch.Tensor | None  # [H*W, D], caller's dtype, never written to
    d_prev: torch.Tensor | None = None  # [H*W] float32
    theta_prev: torch.Tensor | None = None
    has_theta_prev: torch.Tensor | None = None
    sim_next: torch.Tensor | None = None  # [H*W] float32, set when the next frame arrives
    kept_index: torch.Tensor | None = None  # long-term: kept cells
    kept_features: torch.Tensor | None = None  # long-term: their features, anchors merged


@dataclass
class CompressResult:
    """Output of :func:`compress` for one video."""

    keep: torch.Tensor
    """bool ``[T*H*W]``: which tokens stay."""
    features: torch.Tensor
    """``[T*H*W, D]``: the input with long-term anchors replaced by their cluster means."""
    frames: list[FrameRecord]
    grid_thw: tuple[int, int, int]

    @property
    def kept_tokens(self) -> int:
        return int(self.keep.sum())

    @property
    def retained_fraction(self) -> float:
        return self.kept_tokens / max(1, self.keep.numel())

    def tier_counts(self) -> dict[str, dict[str, int]]:
        """Frames, tokens before and tokens kept, per tier."""
        cells = self.grid_thw[1] * self.grid_thw[2]
        per_frame = self.keep.reshape(-1, cells).sum(-1).tolist() if self.frames else []
        counts = {tier: {"frames": 0, "tokens": 0, "kept": 0} for tier in (SHORT, MID, LONG)}
        for record, kept in zip(self.frames, per_frame):
            entry = counts[record.tier]
            entry["frames"] += 1
            entry["tokens"] += cells
            entry["kept"] += int(kept)
        return counts


class FluxMemory:
    """Incremental FluxMem for one video stream; push one temporal grid step at a time.

    Decisions for frame ``i`` depend only on frames ``<= i + S``, so after every push the state
    equals :func:`compress` on the frames pushed so far (``tests/test_memory.py`` pins this).
    Frames in long-term keep only their kept tokens; earlier tiers hold a reference to the pushed
    tensor (no copy, never modified).
    """

    def __init__(
        self,
        config: FluxMemConfig | None = None,
        grid_hw: tuple[int, int] = (1, 1),
        *,
        temporal_patch_size: int = 2,
    ) -> None:
        self.config = config or FluxMemConfig()
        self.short_capacity, self.mid_capacity = self.config.grid_steps(temporal_patch_size)
        height, width = int(grid_hw[0]), int(grid_hw[1])
        if height < 1 or width < 1:
            raise InputError(f"grid_hw must be positive, got {grid_hw}.")
        self.grid_hw = (height, width)
        self.cells = height * width
        self._frames: list[_Frame] = []
        self._records: list[FrameRecord] = []
        self._short: deque[_Frame] = deque()
        self._mid: deque[_Frame] = deque()
        self._last_grid: torch.Tensor | None = None  # newest frame, normalised, for the next pair
        self._edges: EdgeLayout | None = None
        self._dim: int | None = None
        fixed = self.config.pair_sim_threshold
        self._fixed_threshold = None if fixed is None else min(max(1.0 - float(fixed), 0.0), 2.0)

    # ----------------------------------------------------------------- state
    @property
    def num_frames(self) -> int:
        return len(self._frames)

    @property
    def num_final(self) -> int:
        """Frames ``< num_final`` are in long-term and never change again."""
        return self.num_frames - len(self._short) - len(self._mid)

    @property
    def frames(self) -> list[FrameRecord]:
        """Records of every frame pushed so far (a live list: do not modify)."""
        return self._records

    def forget(self, index: int) -> None:
        """Free a long-term frame's kept tokens (a bounded stream drops its oldest frames).

        Long-term frames are never read by the algorithm again, so later decisions are unchanged;
        the frame then contributes no tokens (``kept`` is empty, its record's ``keep`` all False).
        """
        if not 0 <= index < self.num_final:
            raise InputError(
                f"only long-term frames can be forgotten: frame {index} is not below num_final={self.num_final}."
            )
        frame = self._frames[index]
        frame.kept_index = frame.kept_index.new_empty((0,))
        frame.kept_features = frame.kept_features.new_empty((0, frame.kept_features.shape[-1]))
        frame.record.keep = torch.zeros_like(frame.record.keep)

    def kept(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cells, features)`` that frame ``index`` currently contributes, merges applied."""
        frame = self._frames[index]
        if frame.kept_index is not None:
            return frame.kept_index, frame.kept_features
        if frame.record.keep is None:
            return torch.arange(self.cells, device=frame.features.device), frame.features
        cells = frame.record.keep.nonzero().squeeze(1)
        return cells, frame.features.index_select(0, cells)

    def keep_mask(self) -> torch.Tensor:
        """bool ``[num_frames * H * W]`` over everything pushed so far."""
        masks = []
        for frame in self._frames:
            if frame.record.keep is None:
                masks.append(torch.ones(self.cells, dtype=torch.bool, device=frame.features.device))
            else:
                masks.append(frame.record.keep)
        if not masks:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat(masks)

    def kept_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_index, features)`` of every kept token, in temporal raster order."""
        indices, features = [], []
        for i in range(self.num_frames):
            cells, feats = self.kept(i)
            indices.append(cells + i * self.cells)
            features.append(feats)
        return torch.cat(indices), torch.cat(features)

    # ------------------------------------------------------------------ push
    def push(self, features: torch.Tensor) -> StepUpdate:
        """Add the next temporal grid step, ``[H*W, D]`` in raster order; returns what changed."""
        if features.ndim != 2 or features.shape[0] != self.cells:
            raise InputError(
                f"a grid step must be [H*W, D] = [{self.cells}, D] for grid {self.grid_hw}, "
                f"got shape {tuple(features.shape)}."
            )
        if self._dim is None:
            self._dim = features.shape[1]
            self._edges = EdgeLayout(*self.grid_hw, device=features.device)
        elif features.shape[1] != self._dim:
            raise InputError(f"feature size changed mid-stream: {self._dim} then {features.shape[1]}.")

        index = self.num_frames
        grid = normalise(features.detach(), self.grid_hw)  # decisions carry no gradient
        frame = _Frame(record=FrameRecord(index=index), features=features)
        if self._last_grid is not None:
            sim_prev, sim_next = adjacent_similarity(grid, self._last_grid)
            self._frames[-1].sim_next = sim_next.reshape(-1)
            frame.d_prev = 1.0 - sim_prev.reshape(-1)
            defined = frame.d_prev >= 0  # a hair below zero is rounding of identical tokens: undefined
            frame.theta_prev, frame.has_theta_prev = otsu_threshold(frame.d_prev, defined, fallback_to_median=True)
            above = defined & (frame.d_prev >= frame.theta_prev) & frame.has_theta_prev
            frame.record.change_fraction = above.float().mean()
        self._last_grid = grid
        self._frames.append(frame)
        self._records.append(frame.record)
        self._short.append(frame)

        update = StepUpdate(frame_index=index, change_fraction=frame.record.change_fraction)
        if len(self._short) > self.short_capacity:
            evicted = self._short.popleft()
            self._temporal_adjacency_selection(evicted)
            self._mid.append(evicted)
            update.entered_mid = evicted.record.index
            if len(self._mid) > self.mid_capacity:
                oldest = self._mid.popleft()
                self._spatial_domain_consolidation(oldest)
                update.entered_long = oldest.record.index
        return update

    # ------------------------------------------------------------------- TAS
    def _temporal_adjacency_selection(self, frame: _Frame) -> None:
        """TAS on a frame leaving short-term; ``next`` is the frame after it (always whole)."""
        sim_next = frame.sim_next
        d_next = 1.0 - sim_next
        if self._fixed_threshold is None:
            theta_next, _ = otsu_threshold(d_next, fallback_to_median=True)
        else:
            theta_next = d_next.new_tensor(self._fixed_threshold)
        keep = d_next >= theta_next
        if frame.d_prev is not None:
            defined = frame.d_prev >= 0
            if self._fixed_threshold is None:
                theta_prev, has_prev = frame.theta_prev, frame.has_theta_prev
            else:
                theta_prev, has_prev = d_next.new_tensor(self._fixed_threshold), defined.any()
            keep = keep | (defined & (frame.d_prev >= theta_prev) & has_prev)
        if self.config.direct_drop_sim is not None:
            keep = keep & ~(sim_next > self.config.direct_drop_sim)
        frame.record.keep = keep
        frame.record.tas_dropped = ~keep
        frame.record.tier = MID
        frame.sim_next = frame.d_prev = None  # no longer needed

    # ------------------------------------------------------------------- SDC
    def _spatial_domain_consolidation(self, frame: _Frame) -> None:
        """SDC on a frame leaving mid-term: merge similar 8-connected kept cells into anchors."""
        record, features = frame.record, frame.features
        keep = record.keep
        merged_into = torch.full((self.cells,), -1, dtype=torch.long, device=keep.device)
        edges = self._edges
        x = features.float()  # merged means keep their gradient (fine-tuning through the memory)
        distances = (1.0 - edges.cosines(normalise(x.detach(), self.grid_hw))).clamp(0.0, 2.0)
        valid = keep[edges.u] & keep[edges.v]
        theta, has_theta = otsu_threshold(distances, valid, fallback_to_median=False)
        joined = valid & (distances <= theta) & has_theta
        if bool(joined.any()):  # the one decision that needs the host
            labels = _connected_components(self.cells, edges.u[joined], edges.v[joined])
            size = torch.bincount(labels, minlength=self.cells)
            members = (keep & (size[labels] >= 2)).nonzero().squeeze(1)  # cells in clusters of >= 2
            # clusters renumbered 0..C-1 so that per-cluster buffers are [C, D], not [H*W, D]
            cluster_ids, member_cluster = torch.unique(labels.index_select(0, members), return_inverse=True)
            clusters = cluster_ids.numel()
            member_x = x.index_select(0, members)
            sums = torch.zeros(clusters, x.shape[1], dtype=torch.float32, device=x.device)
            sums.index_add_(0, member_cluster, member_x)
            means = sums / size.index_select(0, cluster_ids).unsqueeze(1).float()
            sq_dist = (member_x - means.index_select(0, member_cluster)).detach().square().sum(-1)
            best = torch.full((clusters,), float("inf"), device=x.device)
            best.scatter_reduce_(0, member_cluster, sq_dist, reduce="amin")
            # ties: the lowest cell index among the closest members
            candidates = torch.where(sq_dist == best[member_cluster], members, torch.full_like(members, self.cells))
            anchor_of_cluster = torch.full((clusters,), self.cells, dtype=torch.long, device=x.device)
            anchor_of_cluster.scatter_reduce_(0, member_cluster, candidates, reduce="amin")
            member_anchor = anchor_of_cluster.index_select(0, member_cluster)
            merged_into.index_copy_(0, members, member_anchor)
            keep = keep.clone()
            keep[members[member_anchor != members]] = False
            kept_index = keep.nonzero().squeeze(1)
            kept_features = features.index_select(0, kept_index)
            slot = torch.searchsorted(kept_index, anchor_of_cluster)
            kept_features[slot] = means.to(features.dtype)
        else:
            kept_index = keep.nonzero().squeeze(1)
            kept_features = features.index_select(0, kept_index)
        record.keep = keep
        record.merged_into = merged_into
        record.tier = LONG
        frame.kept_index, frame.kept_features = kept_index, kept_features
        frame.features = None  # long-term frames hold only what they keep


def _connected_components(num_nodes: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Label of every node = smallest node index of its component (min-label propagation with
    pointer jumping; a handful of iterations, one host check each)."""
    labels = torch.arange(num_nodes, device=u.device)
    while True:
        smaller = torch.minimum(labels[u], labels[v])
        updated = labels.scatter_reduce(0, u, smaller, reduce="amin").scatter_reduce(0, v, smaller, reduce="amin")
        updated = updated[updated]
        if torch.equal(updated, labels):
            return labels
        labels = updated


def compress(
    features: torch.Tensor,
    grid_thw: tuple[int, int, int],
    config: FluxMemConfig | None = None,
    *,
    temporal_patch_size: int = 2,
) -> CompressResult:
    """Run FluxMem over one whole video.

    ``features``: ``[T*H*W, D]`` visual tokens in temporal raster order; ``grid_thw``: the merged
    token grid (Qwen's ``video_grid_thw`` with H and W divided by the spatial merge size). The
    input is never modified.
    """
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = tuple(int(g) for g in grid_thw.tolist())
    if len(grid_thw) != 3 or min(int(g) for g in grid_thw) < 1:
        raise InputError(f"grid_thw must be three positive sizes (T, H, W), got {grid_thw}.")
    t, h, w = (int(g) for g in grid_thw)
    if features.ndim != 2 or features.shape[0] != t * h * w:
        raise InputError(
            f"features must be [T*H*W, D] = [{t * h * w}, D] for grid_thw={grid_thw}, got {tuple(features.shape)}."
        )
    memory = FluxMemory(config, (h, w), temporal_patch_size=temporal_patch_size)
    cells = h * w
    for step in range(t):
        memory.push(features[step * cells : (step + 1) * cells])
    keep = memory.keep_mask()
    merged = features
    for index, frame in enumerate(memory._frames):
        anchors = frame.record.anchors
        if anchors is not None and bool(anchors.any()):
            if merged is features:
                merged = features.clone()
            cells_kept, kept_feats = memory.kept(index)
            rows = cells_kept + index * cells
            merged.index_copy_(0, rows, kept_feats)
    return CompressResult(keep=keep, features=merged, frames=memory.frames, grid_thw=(t, h, w))
