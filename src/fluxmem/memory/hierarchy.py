"""The FluxMem hierarchy: short-term, mid-term (TAS), long-term (SDC).

Two paths, one set of kernels. :class:`FluxMemory` takes one grid step at a time (streaming);
:func:`compress` takes a whole video and runs every step of the hierarchy over all frames at once
(one similarity pass over all adjacent pairs, Otsu over all frames in one batch, connected
components over all long-term frames together). Both call the same similarity, scene-change, TAS
(:func:`_temporal_selection`) and SDC (:func:`_consolidate`) functions, the incremental path with
one frame, so they make the same decisions and produce the same merged features
(``tests/test_memory.py``, ``tests/test_memory_batched.py`` and ``tests/test_memory_properties.py``
pin this). Neither copies the video: :func:`compress` returns the keep mask plus the anchors and
their cluster means, and :func:`merge_kept` applies them to any tensor aligned with the tokens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

import torch

from ..errors import InputError
from .config import FluxMemConfig, check_config
from .neighbourhood import EdgeLayout, PaddedFrames, settle_near_one, window_maxima
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
    """Share of cells whose distance to the previous frame exceeds that frame's Otsu threshold
    (the proactive scene-change signal; 0 on a still scene); ``None`` for the first frame."""

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
class _Previous:
    """Distances of ``n`` frames to their previous frames and their Otsu thresholds: what TAS and
    the scene-change signal read (``d``/``defined`` ``[n, cells]``, the rest ``[n]``)."""

    d: torch.Tensor
    defined: torch.Tensor
    theta: torch.Tensor
    has_theta: torch.Tensor
    change_fraction: torch.Tensor

    @classmethod
    def of(cls, sim_prev: torch.Tensor) -> _Previous:
        """From the neighbourhood similarity to the previous frame, ``[n, cells]``."""
        d = 1.0 - sim_prev
        defined = d >= 0  # algorithm.md, TAS step 3 (exact cosines keep every d >= 0; the rule stays)
        theta, has_theta = otsu_threshold(d, defined, fallback_to_median=True)
        # the scene-change signal counts distances that EXCEED the threshold (streaming.md): on a
        # still scene every distance is exactly 0, the threshold (the median) too, and nothing counts
        above = defined & (d > theta.unsqueeze(-1)) & has_theta.unsqueeze(-1)
        return cls(d, defined, theta, has_theta, above.float().mean(-1))

    @classmethod
    def none(cls, frames: int, cells: int, device: torch.device) -> _Previous:
        """For first frames: no distance defined, no threshold."""
        zero = torch.zeros(frames, dtype=torch.float32, device=device)
        defined = torch.zeros(frames, cells, dtype=torch.bool, device=device)
        return cls(torch.zeros(frames, cells, device=device), defined, zero, zero.bool(), zero)

    @classmethod
    def cat(cls, parts: list[_Previous]) -> _Previous:
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def rows(self, stop: int) -> _Previous:
        return _Previous(*(getattr(self, f.name)[:stop] for f in fields(self)))


@dataclass
class _Frame:
    record: FrameRecord
    features: torch.Tensor | None  # [H*W, D], caller's dtype, never written to
    previous: _Previous | None = None  # distances to the previous frame; None for the first frame
    sim_next: torch.Tensor | None = None  # [H*W] float32, set when the next frame arrives
    distances: torch.Tensor | None = None  # [1, E] float32 edge distances, for SDC when it enters long-term
    kept_index: torch.Tensor | None = None  # long-term: kept cells
    kept_features: torch.Tensor | None = None  # long-term: their features, anchors merged


@dataclass
class CompressResult:
    """Output of :func:`compress` for one video.

    Holds no copy of the video: the keep mask, SDC's clusters as token rows and the anchors' means.
    :func:`merge_kept` applies the clusters to any tensor aligned with the video's tokens;
    :attr:`features` builds the full merged tensor on first use, for callers that want it.
    """

    keep: torch.Tensor
    """bool ``[T*H*W]``: which tokens stay."""
    frames: list[FrameRecord]
    grid_thw: tuple[int, int, int]
    source: torch.Tensor
    """``[T*H*W, D]``: the input features (a reference, never written to)."""
    anchor_index: torch.Tensor
    """long ``[C]``: token row of each SDC cluster's anchor (clusters of >= 2 tokens)."""
    anchor_means: torch.Tensor
    """``[C, D]`` in the input dtype: each cluster's mean, computed in float32 (carries gradient)."""
    member_index: torch.Tensor
    """long ``[N]``: token rows of every cluster member (anchors included), ascending."""
    member_cluster: torch.Tensor
    """long ``[N]``: the cluster (row of :attr:`anchor_index`) of each member."""
    _features: torch.Tensor | None = field(default=None, repr=False)
    _kept_index: torch.Tensor | None = field(default=None, repr=False)

    @property
    def features(self) -> torch.Tensor:
        """``[T*H*W, D]``: the input with long-term anchors replaced by their cluster means
        (the input itself when nothing merged). Built once, on first use: a full-size copy."""
        if self._features is None:
            self._features = merge_full(self, self.source)
        return self._features

    @property
    def kept_index(self) -> torch.Tensor:
        """long ``[K]``: token rows that stay, ascending."""
        if self._kept_index is None:
            self._kept_index = self.keep.nonzero().squeeze(1)
        return self._kept_index

    def kept_features(self) -> torch.Tensor:
        """``[K, D]``: the kept tokens' features, anchors merged (``features[keep]`` without the
        full-size copy)."""
        return merge_kept(self, self.source)

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
    equals :func:`compress` (the batched offline path, same kernels) on the frames pushed so far
    (``tests/test_memory.py`` and ``tests/test_memory_batched.py`` pin this).
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
        self._pairs: PaddedFrames | None = None  # the two newest frames, normalised (slots alternate)
        self._edges: EdgeLayout | None = None
        self._dim: int | None = None

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
        frame.kept_index = self._empty_like(frame.kept_index)
        frame.kept_features = self._empty_like(frame.kept_features)
        frame.record.keep = torch.zeros_like(frame.record.keep)

    def release(self, index: int) -> None:
        """Free a long-term frame's kept features, keeping its decisions (record, kept cells): for a
        caller that holds them elsewhere (a streaming session's key/value cache). ``kept(index)``
        is then an error, unless the frame is also forgotten."""
        if not 0 <= index < self.num_final:
            raise InputError(f"only long-term frames can be released: frame {index} is not below num_final={self.num_final}.")
        frame = self._frames[index]
        frame.kept_features = self._empty_like(frame.kept_features)

    def _empty_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """A shared empty tensor of ``tensor``'s kind (no rows): a long stream that frees frames
        allocates nothing per frame (tiny long-lived allocations fragment the process heap)."""
        key = (tensor.dtype, tensor.device, tuple(tensor.shape[1:]))
        empties = self.__dict__.setdefault("_empties", {})
        if key not in empties:
            empties[key] = tensor.new_empty((0, *tensor.shape[1:]))
        return empties[key]

    def feature_bytes(self) -> int:
        """Bytes of the token features the memory holds: pushed frames not yet long-term, kept
        features of long-term frames not released, and :meth:`buffer_bytes`."""
        tensors = [t for f in self._frames for t in (f.features, f.kept_features) if t is not None]
        return self.buffer_bytes() + sum(t.numel() * t.element_size() for t in tensors)

    def buffer_bytes(self) -> int:
        """Bytes of the working buffers: normalised, zero-padded float32 copies of the two newest
        frames (for the next pair) and the edge distances of the frames not yet in long-term (a
        fixed size per stream once mid-term is full)."""
        distances = sum(f.distances.numel() * 4 for f in (*self._short, *self._mid) if f.distances is not None)
        return distances + (self._pairs.nbytes if self._pairs is not None else 0)

    def kept(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cells, features)`` that frame ``index`` currently contributes, merges applied."""
        frame = self._frames[index]
        if frame.kept_index is not None:
            if frame.kept_features.shape[0] != frame.kept_index.numel():
                raise InputError(f"frame {index}'s kept features were released (release); only its cells are known.")
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
            self._pairs = PaddedFrames(*self.grid_hw, self._dim, frames=2, device=features.device)
        elif features.shape[1] != self._dim:
            raise InputError(f"feature size changed mid-stream: {self._dim} then {features.shape[1]}.")

        index = self.num_frames
        slot = index % 2
        self._pairs.load(features.detach(), slot)  # decisions carry no gradient
        # SDC's edge distances while the frame is normalised here: normalising it again when it
        # enters long-term would cost more than these products
        frame = _Frame(record=FrameRecord(index=index), features=features, distances=_edge_distances(self._pairs, slot, 1))
        if index:
            previous = self._frames[-1]
            dots = self._pairs.window_dots(slot, 1 - slot, 1)
            settle_near_one(dots, features.detach(), previous.features.detach())
            sim_prev, sim_next = window_maxima(dots)
            previous.sim_next = sim_next.reshape(1, -1)
            frame.previous = _Previous.of(sim_prev.reshape(1, -1))
            frame.record.change_fraction = frame.previous.change_fraction[0]
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
        cells = self.cells
        previous = frame.previous or _Previous.none(1, cells, frame.sim_next.device)
        keep = _temporal_selection(frame.sim_next, previous, self.config)[0]
        frame.record.keep = keep
        frame.record.tas_dropped = ~keep
        frame.record.tier = MID
        frame.sim_next = frame.previous = None  # no longer needed

    # ------------------------------------------------------------------- SDC
    def _spatial_domain_consolidation(self, frame: _Frame) -> None:
        """SDC on a frame leaving mid-term: merge similar 8-connected kept cells into anchors."""
        record, features = frame.record, frame.features
        keep, merged_into, clusters = _consolidate(features, record.keep.unsqueeze(0), frame.distances, self._edges, self.cells)
        keep, merged_into = keep[0], merged_into[0]
        kept_index = keep.nonzero().squeeze(1)
        kept_features = features.index_select(0, kept_index)
        if clusters is not None:
            anchors, means = clusters[2], clusters[3]
            slot = torch.searchsorted(kept_index, anchors)
            kept_features[slot] = means.to(features.dtype)
        record.keep = keep
        record.merged_into = merged_into
        record.tier = LONG
        frame.kept_index, frame.kept_features = kept_index, kept_features
        frame.features = frame.distances = None  # long-term frames hold only what they keep


def _edge_distances(frames: PaddedFrames, slot: int, count: int) -> torch.Tensor:
    """``[count, E]`` float32 edge distances ``1 - cos`` clamped to [0, 2] of frames ``slot ..``.

    Cosines within a frame are not settled exactly near 1 (:func:`settle_near_one`): no SDC
    decision can depend on it, as every distance below ``EXACT_BAND`` lies in Otsu's first bin and
    below any threshold SDC can return (a bin centre, >= 1/128)."""
    return (1.0 - frames.edge_cosines(slot, count)).clamp(0.0, 2.0)


def _temporal_selection(sim_next: torch.Tensor, previous: _Previous, config: FluxMemConfig) -> torch.Tensor:
    """TAS (``algorithm.md``) on ``n`` frames leaving short-term at once: bool keep ``[n, cells]``.

    ``sim_next``: ``[n, cells]`` neighbourhood similarity to the next frame; ``previous``: the
    same frames' distances to their previous frames (none defined for a first frame)."""
    d_next = 1.0 - sim_next
    fixed = config.pair_sim_threshold
    if fixed is None:
        theta_next, _ = otsu_threshold(d_next, fallback_to_median=True)
        keep = d_next >= theta_next.unsqueeze(-1)
        theta_prev, has_prev = previous.theta, previous.has_theta
    else:
        fixed = d_next.new_tensor(min(max(1.0 - float(fixed), 0.0), 2.0))
        keep = d_next >= fixed
        theta_prev, has_prev = fixed.expand(d_next.shape[0]), previous.defined.any(-1)
    keep |= previous.defined & (previous.d >= theta_prev.unsqueeze(-1)) & has_prev.unsqueeze(-1)
    if config.direct_drop_sim is not None:
        keep &= ~(sim_next > config.direct_drop_sim)
    return keep


def _cluster_means(rows: torch.Tensor, cluster: torch.Tensor, clusters: int) -> torch.Tensor:
    """Float32 mean of ``rows`` (float32 ``[N, D]``) per cluster id (``[N]`` in ``0..clusters-1``);
    members are summed in row order. The one formula for features and for any aligned tensor."""
    sums = torch.zeros(clusters, rows.shape[1], dtype=torch.float32, device=rows.device)
    sums.index_add_(0, cluster, rows)
    sizes = torch.bincount(cluster, minlength=clusters)
    return sums / sizes.unsqueeze(1).float()


def _consolidate(features: torch.Tensor, keep: torch.Tensor, distances: torch.Tensor, edges: EdgeLayout, cells: int):
    """SDC on ``n`` frames at once.

    ``features``: ``[n*cells, D]`` those frames' rows (any dtype; merged means keep their gradient);
    ``keep``: bool ``[n, cells]`` (what TAS kept); ``distances``: float32 ``[n, E]``. Returns
    ``(keep, merged_into, clusters)``: the new keep ``[n, cells]``, ``merged_into`` ``[n, cells]``
    (anchor cell of each member, -1 elsewhere) and ``None`` when nothing merged, else
    ``(members, member_cluster, anchors, means)`` with rows counted from the first frame.
    """
    frames = keep.shape[0]
    nodes = frames * cells
    merged_into = torch.full((frames, cells), -1, dtype=torch.long, device=keep.device)
    valid = keep[:, edges.u] & keep[:, edges.v]
    theta, has_theta = otsu_threshold(distances, valid, fallback_to_median=False)
    joined = valid & (distances <= theta.unsqueeze(1)) & has_theta.unsqueeze(1)
    if not bool(joined.any()):  # the one decision that needs the host
        return keep, merged_into, None
    frame, edge = joined.nonzero(as_tuple=True)
    offset = frame * cells
    labels = _connected_components(nodes, edges.u[edge] + offset, edges.v[edge] + offset)
    size = torch.bincount(labels, minlength=nodes)
    members = (keep.reshape(-1) & (size[labels] >= 2)).nonzero().squeeze(1)  # cells in clusters of >= 2
    # clusters renumbered 0..C-1 so that per-cluster buffers are [C, D], not [n*cells, D]
    cluster_ids, member_cluster = torch.unique(labels.index_select(0, members), return_inverse=True)
    clusters = cluster_ids.numel()
    member_x = features.index_select(0, members).float()
    means = _cluster_means(member_x, member_cluster, clusters)
    sq_dist = _squared_distances(member_x.detach(), means.detach(), member_cluster)
    best = torch.full((clusters,), float("inf"), device=sq_dist.device)
    best.scatter_reduce_(0, member_cluster, sq_dist, reduce="amin")
    # ties: the lowest cell index among the closest members
    candidates = torch.where(sq_dist == best[member_cluster], members, torch.full_like(members, nodes))
    anchors = torch.full((clusters,), nodes, dtype=torch.long, device=members.device)
    anchors.scatter_reduce_(0, member_cluster, candidates, reduce="amin")
    member_anchor = anchors.index_select(0, member_cluster)
    merged_into.view(-1).index_copy_(0, members, member_anchor % cells)
    keep = keep.clone()
    keep.view(-1)[members[member_anchor != members]] = False
    return keep, merged_into, (members, member_cluster, anchors, means)


def _squared_distances(rows: torch.Tensor, means: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
    """``||rows[i] - means[cluster[i]]||^2`` (float32 ``[N]``), a slab of rows at a time so that the
    differences stay in the cache (the same elementwise operations and row sums as on all rows)."""
    out = rows.new_empty(rows.shape[0])
    slab = max(1, _SLAB_BYTES // max(1, rows.shape[1] * 4))
    diff = rows.new_empty(min(slab, rows.shape[0]), rows.shape[1])
    for start in range(0, rows.shape[0], slab):
        stop = min(start + slab, rows.shape[0])
        part = diff[: stop - start]
        torch.index_select(means, 0, cluster[start:stop], out=part)
        torch.sub(rows[start:stop], part, out=part)
        torch.sum(part.square_(), dim=-1, out=out[start:stop])
    return out


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


_SLAB_BYTES = 2**20  # rows of squared distances computed at once (stays in cache)
_CHUNK_BYTES = 32 * 2**20  # float32 normalised frames held at once by compress (stays in cache)


def compress(
    features: torch.Tensor,
    grid_thw: tuple[int, int, int],
    config: FluxMemConfig | None = None,
    *,
    temporal_patch_size: int = 2,
    chunk_frames: int | None = None,
) -> CompressResult:
    """Run FluxMem over one whole video, all frames at once.

    ``features``: ``[T*H*W, D]`` visual tokens in temporal raster order; ``grid_thw``: the merged
    token grid (Qwen's ``video_grid_thw`` with H and W divided by the spatial merge size). The
    input is never modified nor copied; decisions equal :class:`FluxMemory`'s pushed step by step.
    ``chunk_frames``: frames normalised at once for the similarity pass (default: what fits in
    32 MiB of float32, and no more than the video's own size); it bounds the working memory and
    never changes a result.
    """
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        kind = f"a {features.dtype} tensor" if isinstance(features, torch.Tensor) else type(features).__name__
        raise InputError(f"features must be a floating-point torch.Tensor [T*H*W, D], got {kind}; e.g. torch.from_numpy(array).float().")
    config = check_config(config)
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = tuple(int(g) for g in grid_thw.tolist())
    if len(grid_thw) != 3 or min(int(g) for g in grid_thw) < 1:
        raise InputError(f"grid_thw must be three positive sizes (T, H, W), got {grid_thw}.")
    t, h, w = (int(g) for g in grid_thw)
    if features.ndim != 2 or features.shape[0] != t * h * w:
        raise InputError(
            f"features must be [T*H*W, D] = [{t * h * w}, D] for grid_thw={grid_thw}, got {tuple(features.shape)}."
        )
    if not bool(torch.isfinite(features).all()):
        raise InputError("features hold NaN or infinite values; FluxMem's similarities are undefined on them (check the vision encoder's output).")
    config = config or FluxMemConfig()
    short, mid = config.grid_steps(temporal_patch_size)
    cells, dim, device = h * w, features.shape[1], features.device
    n_mid = max(0, t - short)  # frames that left short-term (TAS ran on them)
    n_long = max(0, n_mid - mid)  # frames that left mid-term (SDC ran on them)
    edges = EdgeLayout(h, w, device=device)
    if chunk_frames is None:  # the buffer holds chunk + 1 frames and never outgrows the video itself
        rows = min(_CHUNK_BYTES // max(1, dim * 4), t * cells)
        chunk_frames = max(1, PaddedFrames.frames_within(h, w, dim, rows) - 1)
    if chunk_frames < 1:
        raise InputError(f"chunk_frames must be >= 1, got {chunk_frames}.")

    # one pass over the video: adjacent-pair similarities and long-term edge distances
    x = features.detach()  # decisions carry no gradient
    sim_prev = torch.empty(t, cells, dtype=torch.float32, device=device)  # row 0 unused
    sim_next = torch.empty(t, cells, dtype=torch.float32, device=device)  # row t-1 unused
    distances = torch.empty(n_long, edges.count, dtype=torch.float32, device=device)
    padded = PaddedFrames(h, w, dim, frames=min(chunk_frames + 1, t), device=device)
    newest = 0  # the slot of the last frame loaded (carried into the next chunk)
    for first in range(0, t, chunk_frames):
        last = min(t, first + chunk_frames)
        lo = max(0, first - 1)  # the frame before the chunk, for the pair that crosses into it
        if first:  # slot 0: the previous chunk's last frame, already normalised
            padded.move(newest, 0)
        padded.load(x[first * cells : last * cells], first - lo)  # slots .. last-lo-1
        newest = last - lo - 1
        if last - lo > 1:  # frames lo+1 .. last-1 against lo .. last-2
            dots = padded.window_dots(1, 0, last - lo - 1)
            settle_near_one(dots, x[(lo + 1) * cells : last * cells], x[lo * cells : (last - 1) * cells])
            before, after = window_maxima(dots)
            sim_prev[lo + 1 : last] = before.reshape(-1, cells)
            sim_next[lo : last - 1] = after.reshape(-1, cells)
        if first < n_long:
            upto = min(last, n_long)
            distances[first:upto] = _edge_distances(padded, first - lo, upto - first)
    del padded

    # distances to the previous frame, their thresholds and the scene-change signal, all at once
    previous = _Previous.cat([_Previous.none(1, cells, device), _Previous.of(sim_prev[1:])])

    # TAS over every frame that left short-term
    keep_mid = _temporal_selection(sim_next[:n_mid], previous.rows(n_mid), config)

    # SDC over every frame that left mid-term, all together
    keep_long = keep_mid[:n_long]
    merged_into = torch.full((n_long, cells), -1, dtype=torch.long, device=device)
    clusters = None
    if n_long:
        keep_long, merged_into, clusters = _consolidate(
            features[: n_long * cells], keep_mid[:n_long], distances, edges, cells
        )

    keep = torch.ones(t, cells, dtype=torch.bool, device=device)
    keep[:n_mid] = keep_mid
    keep[:n_long] = keep_long
    dropped = ~keep_mid
    frames = []
    for i in range(t):
        record = FrameRecord(index=i, change_fraction=previous.change_fraction[i] if i else None)
        if i < n_mid:
            record.tier, record.keep, record.tas_dropped = MID, keep_mid[i], dropped[i]
        if i < n_long:
            record.tier, record.keep, record.merged_into = LONG, keep_long[i], merged_into[i]
        frames.append(record)
    if clusters is None:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        members, member_cluster, anchors = empty, empty, empty
        means = features.new_zeros(0, dim)
    else:
        members, member_cluster, anchors, means = clusters
        means = means.to(features.dtype)
    return CompressResult(
        keep=keep.reshape(-1),
        frames=frames,
        grid_thw=(t, h, w),
        source=features,
        anchor_index=anchors,
        anchor_means=means,
        member_index=members,
        member_cluster=member_cluster,
    )


def _clusters_of(result) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(members, member_cluster, anchors)`` of a :class:`CompressResult`, or of any object with
    ``grid_thw`` and per-frame ``frames[i].merged_into`` (e.g. one streamed frame's record)."""
    if isinstance(result, CompressResult):
        return result.member_index, result.member_cluster, result.anchor_index
    cells = result.grid_thw[1] * result.grid_thw[2]
    members, anchor_rows = [], []
    for index, record in enumerate(result.frames):
        merged_into = record.merged_into
        if merged_into is None:
            continue
        cells_in = (merged_into >= 0).nonzero().squeeze(1)
        members.append(cells_in + index * cells)
        anchor_rows.append(merged_into.index_select(0, cells_in) + index * cells)
    if not members:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    members, anchor_rows = torch.cat(members), torch.cat(anchor_rows)
    anchors, member_cluster = torch.unique(anchor_rows, return_inverse=True)
    return members, member_cluster, anchors


def _means_of(result, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anchors, means)``: anchor rows and, in ``values``' dtype, the cluster means of ``values``."""
    t, h, w = result.grid_thw
    if values.ndim != 2 or values.shape[0] != t * h * w:
        raise InputError(
            f"values must be [T*H*W, D'] = [{t * h * w}, D'] for grid {tuple(result.grid_thw)}, "
            f"got shape {tuple(values.shape)}; pass the rows of this video only."
        )
    if isinstance(result, CompressResult) and values is result.source:
        return result.anchor_index, result.anchor_means
    members, member_cluster, anchors = _clusters_of(result)
    members, member_cluster, anchors = (i.to(values.device) for i in (members, member_cluster, anchors))
    if anchors.numel() == 0:
        return anchors, values.new_zeros(0, values.shape[1])
    means = _cluster_means(values.index_select(0, members).float(), member_cluster, anchors.numel())
    return anchors, means.to(values.dtype)


def merge_kept(result, values: torch.Tensor) -> torch.Tensor:
    """The rows of ``values`` that ``result`` keeps, each long-term anchor carrying the mean of
    ``values`` over its SDC cluster: ``[K, D']`` in ``values``' dtype, kept rows in order.

    ``values``: ``[T*H*W, D']``, one row per token of the video ``result`` describes (its video
    features, input embeddings, a deepstack level...). Selects first, then writes the means (taken
    in float32 and cast back, as the memory does for the features): no full-size copy. For the
    video features themselves this equals ``result.features[result.keep]``. Never modifies
    ``values``.
    """
    anchors, means = _means_of(result, values)
    keep = result.keep.to(values.device)
    kept_index = result.kept_index if isinstance(result, CompressResult) else keep.nonzero().squeeze(1)
    kept = values.index_select(0, kept_index.to(values.device))
    if anchors.numel():
        kept[torch.searchsorted(kept_index.to(values.device), anchors)] = means
    return kept


def merge_full(result, values: torch.Tensor) -> torch.Tensor:
    """``values`` (``[T*H*W, D']``) with every long-term anchor replaced by the mean of ``values``
    over its cluster, every row kept: a full-size copy when anything merged (``values`` itself
    otherwise). Prefer :func:`merge_kept` on the prefill path."""
    anchors, means = _means_of(result, values)
    if anchors.numel() == 0:
        return values
    merged = values.clone()
    merged[anchors] = means
    return merged
