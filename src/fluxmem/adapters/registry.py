"""Which adapter serves which model: keyed by ``config.model_type``."""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import ModelAdapter

_ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register(adapter_class: type[ModelAdapter]) -> type[ModelAdapter]:
    for model_type in adapter_class.model_types:
        _ADAPTERS[model_type] = adapter_class
    return adapter_class


def known_model_types() -> set[str]:
    return set(_ADAPTERS)


def supported_families() -> list[str]:
    return sorted({cls.family for cls in _ADAPTERS.values()})


def adapter_for(model) -> ModelAdapter:
    """The adapter for ``model``; a clear error listing what is supported otherwise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    adapter_class = _ADAPTERS.get(model_type)
    if adapter_class is None or not hasattr(model, "model"):
        raise UnsupportedModelError(
            f"fluxmem has no adapter for {type(model).__name__} (model_type={model_type!r}). Supported: "
            f"{', '.join(supported_families())} — load the model with its ...ForConditionalGeneration class."
        )
    return adapter_class(model)
