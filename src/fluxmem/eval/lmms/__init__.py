"""lmms-eval plugin: FluxMem as the lmms-eval model ``fluxmem_qwen2_5_vl`` (no fork of lmms-eval).

Installing fluxmem registers :data:`fluxmem.eval.lmms.manifest.MANIFEST` under lmms-eval's
``lmms_eval.models`` entry point, so ``python -m lmms_eval --model fluxmem_qwen2_5_vl
--model_args pretrained=...`` finds it. ``messages`` (request conversion, generation options)
needs no lmms-eval; ``model`` and ``manifest`` import it. See ``docs/lmms-eval.md``.
"""

from .messages import (
    PUBLISHED_FPS,
    PUBLISHED_MAX_FRAMES,
    PUBLISHED_MAX_PIXELS,
    PUBLISHED_MEDIUM_FRAMES,
    PUBLISHED_SHORT_FRAMES,
    cut_at_stop,
    generation_options,
    parse_count,
    to_qwen_messages,
)

MODEL_NAME = "fluxmem_qwen2_5_vl"
CHAT_CLASS_PATH = "fluxmem.eval.lmms.model.FluxMemQwen2_5_VL"

__all__ = [
    "CHAT_CLASS_PATH",
    "MODEL_NAME",
    "PUBLISHED_FPS",
    "PUBLISHED_MAX_FRAMES",
    "PUBLISHED_MAX_PIXELS",
    "PUBLISHED_MEDIUM_FRAMES",
    "PUBLISHED_SHORT_FRAMES",
    "cut_at_stop",
    "generation_options",
    "parse_count",
    "to_qwen_messages",
]
