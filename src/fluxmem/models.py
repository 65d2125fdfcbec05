"""Drop-in model classes: the official transformers classes with the FluxMem switch installed.

``Qwen2_5_VLForConditionalGeneration.from_pretrained(...)`` loads exactly as the stock class (same
weights, same config, saved under the same architecture name) and accepts
``generate(..., use_fluxmem=True, short_frames=8, medium_frames=64)``. Settings saved in the
model config under ``fluxmem`` (e.g. by ``fluxmem train``) become the defaults.
"""

from __future__ import annotations

import transformers

from .adapters import attach
from .memory import FluxMemConfig


def _install(model) -> None:
    saved = getattr(model.config, "fluxmem", None) or {}
    attach(model, FluxMemConfig.from_dict(saved), active=bool(saved.get("use_fluxmem", False)))


class Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLForConditionalGeneration):
    """``transformers.Qwen2_5_VLForConditionalGeneration`` with ``use_fluxmem`` (off unless asked)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        _install(self)


Qwen2_5_VLProcessor = transformers.Qwen2_5_VLProcessor
