"""Which family object serves which model: one mapping keyed by ``config.model_type``.

Written out here (no registration by import side effect): adding a family is one line below.
"""

from __future__ import annotations

import importlib

from ..errors import UnsupportedModelError
from .base import ModelAdapter

FAMILIES: dict[str, tuple[str, str]] = {
    "qwen2_vl": ("qwen2_vl", "Qwen2VLAdapter"),
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VLAdapter"),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLAdapter"),
    "qwen3_vl_moe": ("qwen3_vl", "Qwen3VLMoeAdapter"),
    "qwen3_5": ("qwen3_5", "Qwen3_5Adapter"),
    "qwen3_5_moe": ("qwen3_5", "Qwen3_5MoeAdapter"),
}
"""``config.model_type`` -> (module in ``fluxmem.adapters``, class)."""


def adapter_class(model_type: str) -> type[ModelAdapter] | None:
    entry = FAMILIES.get(model_type)
    if entry is None:
        return None
    module, name = entry
    return getattr(importlib.import_module(f".{module}", __package__), name)


def known_model_types() -> set[str]:
    return set(FAMILIES)


def supported_families() -> list[str]:
    return sorted({adapter_class(model_type).family for model_type in FAMILIES})


def adapter_for(model) -> ModelAdapter:
    """The family object for ``model``; a clear error listing what is supported otherwise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    cls = adapter_class(model_type) if isinstance(model_type, str) else None
    if cls is None or not hasattr(model, "model"):
        raise UnsupportedModelError(
            f"fluxmem has no adapter for {type(model).__name__} (model_type={model_type!r}). Supported: "
            f"{', '.join(supported_families())} — load the model with its ...ForConditionalGeneration class."
        )
    return cls(model)
