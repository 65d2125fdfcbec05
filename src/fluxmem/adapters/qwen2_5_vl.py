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

from .base import ModelAdapter
from .streaming import Qwen2_5_VLStreamOps


class Qwen2_5_VLAdapter(ModelAdapter):
    family = "Qwen2.5-VL"
    streaming = Qwen2_5_VLStreamOps
