"""FluxMem (``algorithm.md``, exact: ``fluxmem.memory.compress``) and its ablations.

- ``fluxmem-no-tas``: frames leaving short-term keep every token; SDC still consolidates the frames
  leaving mid-term, over all their tokens.
- ``fluxmem-no-sdc``: no frame enters long-term; frames keep what TAS kept.
- ``fluxmem-fixed``: TAS compares with a fixed similarity threshold instead of Otsu's
  (``pair_sim_threshold``, 0.8 by default, the direct-drop similarity); SDC keeps Otsu.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..memory import MID, CompressResult, FluxMemConfig, FluxMemory, compress
from .base import Memory

_NEVER = 2**62  # raw frames: more than any video holds


@dataclass(frozen=True)
class FluxMem(Memory):
    name = "fluxmem"
    summary = "FluxMem (CVPR 2026): short-term whole, mid-term TAS, long-term SDC, Otsu thresholds (the default)."
    tiered = True

    short_frames: int = 8
    medium_frames: int = 64
    direct_drop_sim: float | None = 0.8
    pair_sim_threshold: float | None = None

    def __post_init__(self) -> None:
        self.config  # validates

    @property
    def config(self) -> FluxMemConfig:
        return FluxMemConfig(self.short_frames, self.medium_frames, self.direct_drop_sim, self.pair_sim_threshold)

    @classmethod
    def from_config(cls, config: FluxMemConfig) -> FluxMem:
        return cls(**config.to_dict())

    def run_config(self, temporal_patch_size: int) -> FluxMemConfig:
        self.config.grid_steps(temporal_patch_size)  # impossible settings fail with FluxMem's message
        return self.config

    def check(self, *, temporal_patch_size: int) -> None:
        self.run_config(temporal_patch_size)

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        return compress(features, grid_thw, self.run_config(temporal_patch_size), temporal_patch_size=temporal_patch_size)

    def stream(self, grid_hw, *, temporal_patch_size: int = 2):
        return FluxMemory(self.run_config(temporal_patch_size), grid_hw, temporal_patch_size=temporal_patch_size)


@dataclass(frozen=True)
class FluxMemWithoutSDC(FluxMem):
    name = "fluxmem-no-sdc"
    summary = "FluxMem without SDC (ablation): frames leaving short-term keep what TAS keeps, nothing merges."

    def run_config(self, temporal_patch_size: int) -> FluxMemConfig:
        return super().run_config(temporal_patch_size).replace(medium_frames=_NEVER)


@dataclass(frozen=True)
class FluxMemFixedThreshold(FluxMem):
    name = "fluxmem-fixed"
    summary = "FluxMem with a fixed TAS similarity threshold instead of Otsu (ablation; pair_sim_threshold=0.8)."
    positional = "pair_sim_threshold"

    pair_sim_threshold: float | None = 0.8

    def __post_init__(self) -> None:
        if self.pair_sim_threshold is None:
            raise ConfigError("fluxmem-fixed needs a similarity threshold, e.g. fluxmem-fixed:0.8; plain fluxmem uses Otsu.")
        super().__post_init__()


class _MemoryWithoutTAS(FluxMemory):
    """FluxMemory whose frames leave short-term whole (TAS keeps everything)."""

    def _temporal_adjacency_selection(self, frame) -> None:
        keep = torch.ones(self.cells, dtype=torch.bool, device=frame.features.device)
        frame.record.keep, frame.record.tas_dropped, frame.record.tier = keep, ~keep, MID
        frame.sim_next = frame.d_prev = None


@dataclass(frozen=True)
class FluxMemWithoutTAS(FluxMem):
    name = "fluxmem-no-tas"
    summary = "FluxMem without TAS (ablation): mid-term frames stay whole; SDC consolidates long-term frames."

    def stream(self, grid_hw, *, temporal_patch_size: int = 2):
        return _MemoryWithoutTAS(self.run_config(temporal_patch_size), grid_hw, temporal_patch_size=temporal_patch_size)

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        t, h, w = grid_thw
        memory = self.stream((h, w), temporal_patch_size=temporal_patch_size)
        for step in features.view(t, h * w, -1):
            memory.push(step)
        return _result_of(memory, features, grid_thw)


def _result_of(memory: FluxMemory, features: torch.Tensor, grid_thw) -> CompressResult:
    """The offline result of everything pushed to ``memory`` (its keep mask, clusters and means)."""
    t, h, w = grid_thw
    cells = h * w
    members, anchor_rows, anchors, means = [], [], [], []
    for index, record in enumerate(memory.frames):
        if record.merged_into is None:
            continue
        inside = (record.merged_into >= 0).nonzero().squeeze(1)
        members.append(inside + index * cells)
        anchor_rows.append(record.merged_into.index_select(0, inside) + index * cells)
        kept_cells, kept_features = memory.kept(index)
        anchor_cells = record.anchors.nonzero().squeeze(1)
        anchors.append(anchor_cells + index * cells)
        means.append(kept_features.index_select(0, torch.searchsorted(kept_cells, anchor_cells)))
    empty = torch.zeros(0, dtype=torch.long, device=features.device)
    if members:
        member_index, anchor_of = torch.cat(members), torch.cat(anchor_rows)
        anchor_index, member_cluster = torch.unique(anchor_of, return_inverse=True)
        anchor_means = torch.cat(means)  # anchors ascending, as torch.unique returns them
    else:
        member_index = member_cluster = anchor_index = empty
        anchor_means = features.new_zeros(0, features.shape[1])
    return CompressResult(
        keep=memory.keep_mask().to(features.device),
        frames=list(memory.frames),
        grid_thw=(t, h, w),
        source=features,
        anchor_index=anchor_index,
        anchor_means=anchor_means,
        member_index=member_index,
        member_cluster=member_cluster,
    )
