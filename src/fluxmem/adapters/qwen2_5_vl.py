"""Qwen2.5-VL (``transformers.Qwen2_5_VLForConditionalGeneration``).

Reuses the official model's own methods for every step, so that the embeddings and positions that
fluxmem prunes are bit-for-bit those the stock forward would have used:
``get_video_features`` / ``get_image_features`` (vision tower and merger), ``get_placeholder_mask``
with ``masked_scatter`` (placement), ``get_rope_index`` (M-RoPE positions).

The vision tower attends only within one temporal grid step (full-attention blocks use per-step
sequence boundaries, window attention is spatial), so a video can be encoded step by step with
the same result; ``tests/test_session.py`` checks it.
"""

from __future__ import annotations

import torch

from .base import ModelAdapter, PreparedInputs


class Qwen2_5_VLAdapter(ModelAdapter):
    family = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)

    @property
    def _core(self):
        return self.model.model  # Qwen2_5_VLModel: visual tower + language model

    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **_: object,
    ) -> PreparedInputs:
        encoded = mm_encoder_outputs or {}  # generate() encodes pixels before the prefill
        image = None
        if encoded.get("image") is not None:
            image = torch.cat(encoded["image"].pooler_output)
        elif pixel_values is not None:
            image = torch.cat(self._core.get_image_features(pixel_values, image_grid_thw, return_dict=True).pooler_output)
        video = None
        if encoded.get("video") is not None:
            video = torch.cat(encoded["video"].pooler_output)
        elif pixel_values_videos is not None:
            video = self.encode_video(pixel_values_videos, video_grid_thw)
        embeds, video = self.place_features(input_ids, image, video)
        rope_positions, rope_deltas = self.stock_positions(
            input_ids,
            position_ids,
            mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )
        return PreparedInputs(embeds, rope_positions, rope_deltas, video, extras={})

    def encode_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        out = self._core.get_video_features(pixel_values_videos, grid_thw, return_dict=True)
        return torch.cat(out.pooler_output)
