"""fluxmem: training-free hierarchical visual-token memory for long and live video.

The memory (``fluxmem.memory``) is pure tensor code; adapters (``fluxmem.adapters``) connect it
to Hugging Face Qwen-VL models; ``fluxmem.video`` samples frames; the streaming session,
evaluation, training, pictures and the command line build on those.
"""

from __future__ import annotations

from .adapters import get_state
from .adapters import registry as _registry
from .errors import ConfigError, FluxMemError, InputError, UnsupportedModelError, VideoError
from .memory import CompressResult, FluxMemConfig, FluxMemory, FrameRecord, compress

__version__ = "0.1.0"


def enable(model, config: FluxMemConfig | None = None, **options):
    """Switch FluxMem on for ``model`` (a model loaded with plain transformers), in place.

    ``options`` are :class:`FluxMemConfig` fields (``short_frames=8, medium_frames=64, ...``).
    Only this instance changes; ``generate(..., use_fluxmem=False)`` still turns it off per call.
    Returns the model.
    """
    from .adapters import attach

    config = (config or FluxMemConfig()).replace(**options) if options else (config or FluxMemConfig())
    attach(model, config, active=True)
    return model


def disable(model):
    """Remove the switch from ``model``; it behaves exactly as the stock model again."""
    from .adapters import detach

    detach(model)
    return model


def supported_families() -> list[str]:
    return _registry.supported_families()


def __getattr__(name: str):
    # Heavy or optional pieces load on first use, so `import fluxmem` stays cheap.
    if name in ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"):
        from . import models

        return getattr(models, name)
    if name == "process_vision_info":
        from .video import process_vision_info

        return process_vision_info
    if name == "StreamSession":
        from .session import StreamSession

        return StreamSession
    raise AttributeError(f"module 'fluxmem' has no attribute {name!r}")


__all__ = [
    "FluxMemConfig",
    "FluxMemory",
    "CompressResult",
    "FrameRecord",
    "compress",
    "enable",
    "disable",
    "get_state",
    "supported_families",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen2_5_VLProcessor",
    "process_vision_info",
    "StreamSession",
    "FluxMemError",
    "ConfigError",
    "VideoError",
    "InputError",
    "UnsupportedModelError",
]
