"""Qwen3-VL (``transformers.Qwen3VLForConditionalGeneration``) and its MoE variant.

What differs from Qwen2.5-VL, and how the adapter handles it (details in ``docs/models.md``):

- **Several vision blocks per video.** ``Qwen3VLProcessor`` writes every temporal grid step as its
  own block, ``<t seconds><|vision_start|><|video_pad|>*H*W<|vision_end|>``; ``video_grid_thw``
  keeps one row ``(T, H, W)`` per video. ``ModelAdapter.video_spans`` takes a video's ``T*H*W``
  tokens in order wherever they sit, so the memory sees the blocks of one video as ONE stream
  (one ``compress`` call, frames in order); the timestamp text between the blocks is text and
  always kept.
- **Positions.** ``get_rope_index`` splits each video into ``T`` one-step grids: every frame starts
  at the current text position (all its tokens share that temporal id) and advances it by
  ``max(H, W)``; time is told by the timestamp text, not by the temporal ids. The adapter calls
  the stock method, and kept tokens keep these positions.
- **Deepstack.** The vision tower also returns, per ``deepstack_visual_indexes`` level, features
  for every visual token that the text model adds to the hidden states of its first decoder layers
  at the visual positions (``visual_pos_masks``, ``deepstack_visual_embeds``). They are pruned at
  the same positions as their tokens, and long-term anchors get the mean over their SDC cluster
  like the tokens do (``memory.merge_kept``). The stock forward derives ``visual_pos_masks`` and
  ``deepstack_visual_embeds`` itself from the placeholder tokens and ``mm_encoder_outputs`` (it
  does not accept them as arguments), so the pruned prefill hands it, for the kept sequence, the
  placeholder embeddings at the visual slots and the kept features in ``mm_encoder_outputs``; its
  own ``masked_scatter`` puts them back and its own code builds the deepstack inputs.
- **Vision tower.** Per-grid-step attention boundaries (``get_vision_attention_seqlens`` without
  ``merge_temporal``), rotary and interpolated learned position embeddings repeated per step:
  grid steps are encoded independently (checked by ``tests/test_adapters_qwen3_vl.py``).
"""

from __future__ import annotations

import torch

from ..memory import merge_kept
from . import hf
from .base import ModelAdapter, PreparedInputs
from .streaming import Qwen3VLStreamOps


class Qwen3VLAdapter(ModelAdapter):
    family = "Qwen3-VL"
    streaming = Qwen3VLStreamOps
    steps_are_independent = True

    def video_deepstack(self, prepared: PreparedInputs) -> list[torch.Tensor] | None:
        """Per level, ``[N_video_tokens, D]`` deepstack features of every video of the batch in
        order (rows match ``prepared.video_features``); ``None`` when the family has none."""
        return hf.deepstack(prepared.extras.get("video_output"))

    def pruned_deepstack(self, prepared: PreparedInputs, pruned) -> list[torch.Tensor] | None:
        """Per level, the video deepstack features of the KEPT video tokens in the pruned
        sequence's order (row-major over ``pruned.kept_index``), long-term anchors merged."""
        levels = self.video_deepstack(prepared)
        if levels is None:
            return None
        # spans are listed sample by sample in sequence order, as the pruned sequence holds them
        parts = [[] for _ in levels]
        offset = 0
        for span, result in pruned.results:
            for index, level in enumerate(levels):
                parts[index].append(merge_kept(result, level[offset : offset + span.num_tokens]))
            offset += span.num_tokens
        return [torch.cat(part) if part else level[:0] for part, level in zip(parts, levels)]

    def pruned_extras(self, prepared: PreparedInputs, pruned) -> dict:
        video_output = prepared.extras.get("video_output")
        image_output = prepared.extras.get("image_output")
        if hf.deepstack(video_output) is None and hf.deepstack(image_output) is None:
            return {}  # no per-token extras: the pruned inputs_embeds are all the stock forward needs
        input_ids = prepared.extras["input_ids"]
        valid = pruned.kept_index >= 0
        kept_ids = torch.gather(input_ids, 1, pruned.kept_index.clamp_min(0))
        embeds = pruned.inputs_embeds
        placeholders = embeds.clone()
        outputs = {}
        if video_output is not None:
            is_video = (kept_ids == self.video_token_id) & valid
            kept = embeds[is_video]  # row-major, the order masked_scatter fills them back in
            deepstack = self.pruned_deepstack(prepared, pruned)
            outputs["video"] = hf.encoder_output(video_output, kept, deepstack)
            token = torch.tensor(self.video_token_id, device=input_ids.device)
            placeholders[is_video] = hf.embed_tokens(self.model, token).to(embeds.dtype)
        if image_output is not None:  # images are never pruned: pass them through unchanged
            is_image = (kept_ids == self.image_token_id) & valid
            outputs["image"] = image_output
            token = torch.tensor(self.image_token_id, device=input_ids.device)
            placeholders[is_image] = hf.embed_tokens(self.model, token).to(embeds.dtype)
        return {"inputs_embeds": placeholders, "mm_encoder_outputs": outputs}


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE: the same vision tower, processor and positions; MoE blocks in the text model
    change nothing for input-level pruning."""

    family = "Qwen3-VL-MoE"
