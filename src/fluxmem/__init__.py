"""fluxmem: training-free hierarchical visual-token memory for long and live video.

The memory (``fluxmem.memory``) is pure tensor code; adapters (``fluxmem.adapters``) connect it
to Hugging Face Qwen-VL models; ``fluxmem.video`` samples frames; the streaming session,
evaluation, training, pictures and the command line build on those.

Everything but the error classes loads on first use (``fluxmem.FluxMemConfig``,
``fluxmem.loading.load_model``, ...), so ``import fluxmem`` and ``fluxmem --help`` stay fast and
never pull in torch, the trainer, peft, Gradio or lmms-eval before they are needed.
"""

from __future__ import annotations

import importlib

from .errors import (
    ConfigError,
    FluxMemError,
    InputError,
    UnsupportedModelError,
    UnsupportedTransformersError,
    VideoError,
)

__version__ = "0.2.0"

# public name -> module it lives in (imported on first access)
_LAZY = {
    "CompressResult": ".memory",
    "FluxMemConfig": ".memory",
    "FluxMemory": ".memory",
    "FrameRecord": ".memory",
    "compress": ".memory",
    "get_state": ".adapters",
    "enabled": ".adapters",
    "MemoryReport": ".adapters",
    "Qwen2VLForConditionalGeneration": ".models",
    "Qwen2_5_VLForConditionalGeneration": ".models",
    "Qwen3VLForConditionalGeneration": ".models",
    "Qwen3VLMoeForConditionalGeneration": ".models",
    "Qwen3_5ForConditionalGeneration": ".models",
    "Qwen3_5MoeForConditionalGeneration": ".models",
    "Qwen2VLProcessor": ".models",
    "Qwen2_5_VLProcessor": ".models",
    "Qwen3VLProcessor": ".models",
    "process_vision_info": ".video",
    "StreamSession": ".session",
}
# subpackages reachable as attributes after a bare `import fluxmem` (fluxmem.loading.load_model, ...)
_SUBMODULES = frozenset({
    "adapters", "cli", "demo", "errors", "eval", "inference", "inputs", "loading", "memory", "models",
    "memories", "session", "testing", "testing_families", "train", "video", "viz",
})


def enable(model, config=None, *, memory=None, budget=None, **options):
    """Switch FluxMem on for ``model`` (a model loaded with plain transformers), in place.

    ``options`` are :class:`FluxMemConfig` fields (``short_frames=8, medium_frames=64, ...``).
    ``memory`` names another memory method (``"evs"``, ``"recent:4"``..., see
    ``fluxmem.memories``) and ``budget`` a token budget (``1200``, ``0.35``, ``"match:fluxmem"``).
    Only this instance changes; ``generate(..., use_fluxmem=False)`` still turns it off per call,
    and ``generate(..., fluxmem_stats=callback)`` hands the call's memory report to ``callback``.
    Checks first that the installed transformers behaves as fluxmem relies on
    (:class:`UnsupportedTransformersError` otherwise). Returns the model. For a block of code only,
    use ``with fluxmem.enabled(model, short_frames=8): ...``.
    """
    from .adapters import install
    from .memories import get as get_memory
    from .memory import FluxMemConfig

    if memory is not None and (config is not None or options):  # FluxMem options on the named method
        memory = get_memory(memory, **(config.to_dict() if config else {}), **options)
        config, options = None, {}
    if memory is None:
        config = (config or FluxMemConfig()).replace(**options) if options else (config or FluxMemConfig())
    install(model, config, default_active=True, memory=memory, budget=budget)
    return model


def disable(model):
    """Remove the switch from ``model``; it behaves exactly as the stock model again."""
    from .adapters import detach

    detach(model)
    return model


def supported_families() -> list[str]:
    from .adapters import registry

    return registry.supported_families()


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fluxmem' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = [
    "CompressResult",
    "ConfigError",
    "FluxMemConfig",
    "FluxMemError",
    "FluxMemory",
    "FrameRecord",
    "InputError",
    "MemoryReport",
    "Qwen2VLForConditionalGeneration",
    "Qwen2VLProcessor",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen2_5_VLProcessor",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration",
    "Qwen3VLProcessor",
    "Qwen3_5ForConditionalGeneration",
    "Qwen3_5MoeForConditionalGeneration",
    "StreamSession",
    "UnsupportedModelError",
    "UnsupportedTransformersError",
    "VideoError",
    "compress",
    "disable",
    "enable",
    "enabled",
    "get_state",
    "process_vision_info",
    "supported_families",
]
