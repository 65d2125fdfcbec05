"""Prefill pruning: run the memory on every video of a batch and shrink the sequence.

Model-agnostic: works on what an adapter prepared (embeddings with features placed, M-RoPE
positions, video spans). Kept tokens keep their original positions; text is always kept; images
are untouched; each video is compressed on its own; each sample is re-padded on the caller's
padding side so that its result equals running it alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..memory import CompressResult, FluxMemConfig, compress
from .base import ModelAdapter, PreparedInputs, VideoSpan


@dataclass
class VideoReport:
    """Memory statistics for one video of one call."""

    batch_index: int
    grid_thw: tuple[int, int, int]
    tokens: int
    kept: int
    tiers: dict[str, dict[str, int]]
    memory_ms: float
    frames: list = field(default_factory=list, repr=False)  # FrameRecord per grid step

    def to_dict(self) -> dict:
        return {
            "batch_index": self.batch_index,
            "grid_thw": list(self.grid_thw),
            "tokens": self.tokens,
            "kept": self.kept,
            "retained_fraction": self.kept / max(1, self.tokens),
            "tiers": self.tiers,
            "memory_ms": round(self.memory_ms, 3),
        }


@dataclass
class PrunedPrefill:
    """The pruned language-model inputs of one prefill, and how they map to the original."""

    inputs_embeds: torch.Tensor  # [B, L', D]
    position_ids: torch.Tensor  # [3, B, L'] original M-RoPE positions of the kept tokens
    attention_mask: torch.Tensor  # [B, L']
    kept_index: torch.Tensor  # [B, L'] original sequence index of each slot, -1 on padding
    labels: torch.Tensor | None
    original_length: int
    results: list[tuple[VideoSpan, CompressResult]] = field(default_factory=list)
    reports: list[VideoReport] = field(default_factory=list)


def padding_side(attention_mask: torch.Tensor) -> str:
    """The side the caller padded on ("left" when there is no padding)."""
    if attention_mask.shape[1] and not bool(attention_mask[:, -1].all()) and bool(attention_mask[:, 0].all()):
        return "right"
    return "left"


def prune_prefill(
    adapter: ModelAdapter,
    prepared: PreparedInputs,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    config: FluxMemConfig,
    labels: torch.Tensor | None = None,
) -> PrunedPrefill:
    """Compress every video of the batch and shrink the sequence to the kept tokens.

    Gathers the kept rows first and then writes the long-term anchors' cluster means into the
    kept-size tensor: nothing of the input's full size is copied or allocated.
    """
    embeds = prepared.inputs_embeds
    batch, length = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    spans = adapter.video_spans(input_ids, video_grid_thw)
    keep = attention_mask.bool().clone()
    results, reports = [], []
    offset = 0
    for span in spans:
        start = time.perf_counter()
        features = prepared.video_features[offset : offset + span.num_tokens]
        offset += span.num_tokens
        result = compress(features, span.grid_thw, config, temporal_patch_size=adapter.temporal_patch_size)
        keep[span.batch_index, span.positions] &= result.keep.to(keep.device)
        results.append((span, result))
        reports.append(
            VideoReport(
                batch_index=span.batch_index,
                grid_thw=span.grid_thw,
                tokens=span.num_tokens,
                kept=result.kept_tokens,
                tiers=result.tier_counts(),
                memory_ms=(time.perf_counter() - start) * 1000,
                frames=result.frames,
            )
        )

    counts = keep.sum(1)
    new_length = int(counts.max()) if batch else 0
    side = padding_side(attention_mask)
    slots = torch.arange(new_length, device=input_ids.device).expand(batch, -1)
    first = (new_length - counts).unsqueeze(1) if side == "left" else torch.zeros_like(counts).unsqueeze(1)
    valid = (slots >= first) & (slots < first + counts.unsqueeze(1))
    kept_index = torch.full((batch, new_length), -1, dtype=torch.long, device=input_ids.device)
    kept_index[valid] = keep.nonzero()[:, 1]  # row-major: sample by sample, in sequence order
    gather = kept_index.clamp_min(0)

    new_embeds = torch.gather(embeds, 1, gather.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    if not bool(valid.all()):
        new_embeds.masked_fill_(~valid.unsqueeze(-1), 0.0)
    if any(result.anchor_index.numel() for _, result in results):
        # long-term anchors carry their cluster means: write them into the kept-size tensor
        slot_of = torch.full((batch, length), -1, dtype=torch.long, device=input_ids.device)
        slot_of[keep] = slots[valid]
        for span, result in results:
            if result.anchor_index.numel():
                anchor_slots = slot_of[span.batch_index, span.positions[result.anchor_index.to(span.positions.device)]]
                new_embeds[span.batch_index, anchor_slots.to(new_embeds.device)] = result.anchor_means.to(
                    new_embeds.device, embeds.dtype
                )
    positions = prepared.position_ids
    new_positions = torch.gather(positions, 2, gather.unsqueeze(0).expand(positions.shape[0], -1, -1))
    new_positions = torch.where(valid.unsqueeze(0), new_positions, torch.ones_like(new_positions))
    new_labels = None
    if labels is not None:
        new_labels = torch.gather(labels, 1, gather)
        new_labels = torch.where(valid, new_labels, torch.full_like(new_labels, -100))
    return PrunedPrefill(
        inputs_embeds=new_embeds,
        position_ids=new_positions,
        attention_mask=valid.to(attention_mask.dtype),
        kept_index=kept_index,
        labels=new_labels,
        original_length=length,
        results=results,
        reports=reports,
    )
