"""Streaming strategies (:class:`~fluxmem.session.model_ops.StreamOps`) for Qwen families other
than Qwen2.5-VL, registered through ``register_stream_ops`` on import.

- Qwen2-VL: the base strategy, except that a video's temporal M-RoPE id advances by exactly one per
  grid step whatever the frame rate (Qwen2.5-VL: ``tokens_per_second * seconds_per_grid_step``).
  The layout is still checked against the model's own ``get_rope_index``.

Not yet here (see ``docs/models.md``): Qwen3-VL (per-step timestamp text and vision blocks,
deepstack features that must travel with the kept tokens through the memory and into the decoder's
``visual_pos_masks`` / ``deepstack_visual_embeds``) and Qwen3.5 (per-step blocks as Qwen3-VL, and a
recurrent cache that must be snapshotted rather than cut; the adapter provides
``snapshot_cache`` / ``restore_cache``).
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedModelError
from .model_ops import StreamOps, VideoLayout, register_stream_ops


@register_stream_ops
class Qwen2VLStreamOps(StreamOps):
    """Qwen2-VL: temporal position = video start + grid step index."""

    model_types = ("qwen2_vl",)

    def layout(self, head_length: int, grid_hw: tuple[int, int], fps: float) -> VideoLayout:
        interval = torch.tensor(1.0, dtype=torch.float32)
        seconds_per_step = torch.tensor([self.temporal_patch_size / float(fps)], dtype=torch.float32)
        candidates = [VideoLayout(head_length, grid_hw, interval, rule) for rule in ("after_grid", "after_max")]
        for steps in (1, max(grid_hw) + 2):  # the second probe's temporal ids pass the spatial ones
            expected = self._rope_reference(head_length, steps, grid_hw, seconds_per_step)
            candidates = [c for c in candidates if torch.equal(self._positions_for_probe(c, steps, 3), expected)]
        if not candidates:
            raise UnsupportedModelError(
                f"{self.adapter.family}: the installed transformers numbers video positions in a way the streaming "
                "session does not reproduce; use the offline path (model.generate with use_fluxmem=True)."
            )
        return candidates[0]
