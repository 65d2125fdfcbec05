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
  like the tokens do (``pruning.merge_like``). The stock forward derives ``visual_pos_masks`` and
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

from ..errors import InputError
from .base import ModelAdapter, PreparedInputs
from .pruning import merge_like


def _deepstack(output) -> list | None:
    """Per-level deepstack features of an encoder output (lists of per-input tensors), if any."""
    levels = getattr(output, "deepstack_features", None) if output is not None else None
    return levels or None


class Qwen3VLAdapter(ModelAdapter):
    family = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    steps_are_independent = True

    @property
    def _core(self):
        return self.model.model  # Qwen3VLModel: visual tower + language model

    @property
    def has_deepstack(self) -> bool:
        return bool(getattr(self.vision_config, "deepstack_visual_indexes", None))

    def _encoder_output(self, kind: str, encoded: dict, pixels, grid_thw):
        if encoded.get(kind) is not None:  # generate() encodes pixels before the prefill
            if self.has_deepstack and _deepstack(encoded[kind]) is None:
                raise InputError(
                    f"mm_encoder_outputs[{kind!r}] has no deepstack_features, which {self.family} needs; encode "
                    "with the model's get_video_features / get_image_features (or adapter.encode_videos_stepwise)."
                )
            return encoded[kind]
        if pixels is None:
            return None
        getter = self._core.get_image_features if kind == "image" else self._core.get_video_features
        return getter(pixels, grid_thw, return_dict=True)

    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **_: object,
    ) -> PreparedInputs:
        encoded = mm_encoder_outputs or {}
        image_output = self._encoder_output("image", encoded, pixel_values, image_grid_thw)
        video_output = self._encoder_output("video", encoded, pixel_values_videos, video_grid_thw)
        embeds, video = self.place_features(
            input_ids,
            None if image_output is None else torch.cat(image_output.pooler_output),
            None if video_output is None else torch.cat(video_output.pooler_output),
        )
        rope_positions, rope_deltas = self.stock_positions(
            input_ids,
            position_ids,
            mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            attention_mask=attention_mask,
        )
        extras = {"input_ids": input_ids, "image_output": image_output, "video_output": video_output}
        return PreparedInputs(embeds, rope_positions, rope_deltas, video, extras=extras)

    def encode_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.encode_video_output(pixel_values_videos, grid_thw).pooler_output)

    def video_deepstack(self, prepared: PreparedInputs) -> list[torch.Tensor] | None:
        """Per level, ``[N_video_tokens, D]`` deepstack features of every video of the batch in
        order (rows match ``prepared.video_features``); ``None`` when the family has none."""
        levels = _deepstack(prepared.extras.get("video_output"))
        return None if levels is None else [torch.cat(level) for level in levels]

    def pruned_deepstack(self, prepared: PreparedInputs, pruned) -> list[torch.Tensor] | None:
        """Per level, the video deepstack features of the KEPT video tokens in the pruned
        sequence's order (row-major over ``pruned.kept_index``), long-term anchors merged."""
        levels = self.video_deepstack(prepared)
        if levels is None:
            return None
        merged_levels = []
        for level in levels:
            parts, offset = [], 0
            for span, result in pruned.results:
                part = level[offset : offset + span.num_tokens]
                offset += span.num_tokens
                parts.append(merge_like(result, part))
            merged_levels.append(torch.cat(parts) if parts else level)
        input_ids = prepared.extras["input_ids"]
        is_video_original = input_ids == self.video_token_id
        video_row = is_video_original.flatten().long().cumsum(0).view_as(input_ids) - 1
        valid = pruned.kept_index >= 0
        gather = pruned.kept_index.clamp_min(0)
        kept_ids = torch.gather(input_ids, 1, gather)
        is_video = (kept_ids == self.video_token_id) & valid
        rows = torch.gather(video_row, 1, gather)[is_video]
        return [level.index_select(0, rows.to(level.device)) for level in merged_levels]

    def pruned_extras(self, prepared: PreparedInputs, pruned) -> dict:
        video_output = prepared.extras.get("video_output")
        image_output = prepared.extras.get("image_output")
        if _deepstack(video_output) is None and _deepstack(image_output) is None:
            return {}  # no per-token extras: the pruned inputs_embeds are all the stock forward needs
        core = self._core
        input_ids = prepared.extras["input_ids"]
        valid = pruned.kept_index >= 0
        kept_ids = torch.gather(input_ids, 1, pruned.kept_index.clamp_min(0))
        embeds = pruned.inputs_embeds
        placeholders = embeds.clone()
        table = core.get_input_embeddings()
        outputs = {}
        if video_output is not None:
            is_video = (kept_ids == self.video_token_id) & valid
            kept = embeds[is_video]  # row-major, the order masked_scatter fills them back in
            deepstack = self.pruned_deepstack(prepared, pruned)
            outputs["video"] = type(video_output)(
                pooler_output=(kept,),
                deepstack_features=[(level,) for level in deepstack] if deepstack is not None else None,
            )
            token = torch.tensor(self.video_token_id, device=input_ids.device)
            placeholders[is_video] = table(token).to(embeds.dtype)
        if image_output is not None:  # images are never pruned: pass them through unchanged
            is_image = (kept_ids == self.image_token_id) & valid
            outputs["image"] = image_output
            token = torch.tensor(self.image_token_id, device=input_ids.device)
            placeholders[is_image] = table(token).to(embeds.dtype)
        return {"inputs_embeds": placeholders, "mm_encoder_outputs": outputs}


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE: the same vision tower, processor and positions; MoE blocks in the text model
    change nothing for input-level pruning."""

    family = "Qwen3-VL-MoE"
    model_types = ("qwen3_vl_moe",)
