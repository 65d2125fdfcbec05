"""Prefill pruning: run the memory on every video of a batch and shrink the sequence.

Model-agnostic: works on what an adapter prepared (embeddings with features placed, M-RoPE
positions, video spans), and memory-agnostic: any :class:`fluxmem.memories.Memory` decides which
tokens of each video stay (one keep-mask path for every method). Kept tokens keep their original
positions, except for a method that feeds its kept steps as the video (``restarts_video``:
``recent:N``), whose kept steps take the positions of the video's first steps, as the stock model
given only those frames numbers them; text is always kept; images are untouched; each video is
compressed on its own; each sample is re-padded on the caller's padding side so that its result
equals running it alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..memories import FluxMem, Memory, MemoryResult, MemoryStats
from ..memories.positions import restart_video
from ..memory import FluxMemConfig
from .base import ModelAdapter, PreparedInputs, VideoSpan


@dataclass
class VideoReport:
    """Memory statistics for one video of one call."""

    batch_index: int
    grid_thw: tuple[int, int, int]
    stats: MemoryStats
    frames: list = field(default_factory=list, repr=False)  # FrameRecord per grid step

    @property
    def tokens(self) -> int:
        return self.stats.tokens

    @property
    def kept(self) -> int:
        return self.stats.kept

    @property
    def tiers(self) -> dict[str, dict[str, int]] | None:
        return self.stats.tiers

    @property
    def memory_ms(self) -> float:
        return self.stats.memory_ms

    def to_dict(self) -> dict:
        return {"batch_index": self.batch_index, **self.stats.to_dict()}


@dataclass
class PrunedPrefill:
    """The pruned language-model inputs of one prefill, and how they map to the original."""

    inputs_embeds: torch.Tensor  # [B, L', D]
    position_ids: torch.Tensor  # [3, B, L'] original M-RoPE positions of the kept tokens
    attention_mask: torch.Tensor  # [B, L']
    kept_index: torch.Tensor  # [B, L'] original sequence index of each slot, -1 on padding
    labels: torch.Tensor | None
    original_length: int
    rope_deltas: torch.Tensor | None = None  # [B, 1] next text position minus L (after renumbering)
    results: list[tuple[VideoSpan, MemoryResult]] = field(default_factory=list)
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
    memory: Memory | FluxMemConfig,
    labels: torch.Tensor | None = None,
    *,
    budget=None,
) -> PrunedPrefill:
    """Run ``memory`` (a method, or FluxMem's settings) on every video of the batch, with ``budget``
    (:class:`fluxmem.memories.Budget`) solved per video, and shrink the sequence to the kept tokens.

    Gathers the kept rows first and then writes merged anchors' cluster means into the
    kept-size tensor: nothing of the input's full size is copied or allocated.
    """
    if isinstance(memory, FluxMemConfig):
        memory = FluxMem.from_config(memory)
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
        result = memory.compress(features, span.grid_thw, temporal_patch_size=adapter.temporal_patch_size, budget=budget)
        keep[span.batch_index, span.positions] &= result.keep.to(keep.device)
        results.append((span, result))
        result.memory_ms = (time.perf_counter() - start) * 1000
        stats = result.stats(grid_thw=list(span.grid_thw))
        reports.append(VideoReport(span.batch_index, span.grid_thw, stats, frames=result.frames))

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
    positions, rope_deltas = prepared.position_ids, prepared.rope_deltas
    if memory.restarts_video:
        positions, rope_deltas = _restart_videos(positions, rope_deltas, results, attention_mask)
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
        rope_deltas=rope_deltas,
        results=results,
        reports=reports,
    )


def _restart_videos(positions, rope_deltas, results, attention_mask):
    """:func:`fluxmem.memories.positions.restart_video` on each video of the batch; the rope deltas
    follow each sample's new largest position. A video split in blocks (Qwen3-VL: one per step,
    with timestamps in text) keeps its positions."""
    positions = positions.clone()
    valid = attention_mask.bool().to(positions.device).unsqueeze(0)
    before = positions.masked_fill(~valid, -1).amax(dim=(0, 2))  # per sample
    for span, result in results:
        restart_video(positions[:, span.batch_index], span.positions.to(positions.device), result.kept_index.to(positions.device))
    if rope_deltas is not None:
        now = positions.masked_fill(~valid, -1).amax(dim=(0, 2))
        rope_deltas = rope_deltas - (before - now).to(rope_deltas.device, rope_deltas.dtype).view(-1, 1)
    return positions, rope_deltas
