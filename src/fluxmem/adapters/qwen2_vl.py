"""Qwen2-VL (``transformers.Qwen2VLForConditionalGeneration``).

Qwen2.5-VL's predecessor and, for fluxmem, the same seam: one contiguous block of
``<|video_pad|>`` tokens per video, ``get_video_features`` / ``get_placeholder_mask`` /
``get_rope_index`` with the same signatures, no extra per-token inputs, the same original
position rule. What differs:

- M-RoPE temporal ids are the grid-step index (``start + t``); Qwen2.5-VL scales them by
  ``second_per_grid_ts * tokens_per_second``. ``get_rope_index`` ignores ``second_per_grid_ts``.
- The vision tower has full attention in every block (no window attention), with per-grid-step
  sequence boundaries (``get_vision_attention_seqlens`` without ``merge_temporal``): grid steps
  are encoded independently, so step-wise encoding is exact (``tests/test_adapters_qwen2_vl.py``).
"""

from __future__ import annotations

from .qwen2_5_vl import Qwen2_5_VLAdapter
from .streaming import Qwen2VLStreamOps


class Qwen2VLAdapter(Qwen2_5_VLAdapter):
    family = "Qwen2-VL"
    streaming = Qwen2VLStreamOps
    steps_are_independent = True

    def temporal_interval(self, seconds_per_step):
        return 1  # one position per grid step, whatever the fps
