"""Drop-in model names: the official transformers classes with the FluxMem switch installed.

``fluxmem.models.Qwen3VLForConditionalGeneration.from_pretrained(...)`` (and the same name for
every supported family, see :data:`DROP_IN`) returns an instance of the OFFICIAL transformers
class (same weights, config, saving, loading, peft and accelerate behaviour) whose ``generate``
also takes ``use_fluxmem=True, short_frames=8, medium_frames=64, fluxmem_stats=callback``. The
memory is off unless asked, or unless the checkpoint's config records FluxMem settings with
``use_fluxmem`` (``fluxmem train`` writes them).

A factory rather than a subclass: transformers applies its checkpoint key conversions only to its
own classes, so a subclass defined here would load checkpoints with the language model left at
random initialisation.
"""

from __future__ import annotations

import transformers

from .adapters import get_state, install
from .memory import FluxMemConfig

DROP_IN = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl_moe",
    "Qwen3_5ForConditionalGeneration": "qwen3_5",
    "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe",
}
"""Drop-in class name -> ``config.model_type`` it loads."""

PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor")


def _install(model):
    saved = getattr(model.config, "fluxmem", None) or {}
    install(model, FluxMemConfig.from_dict(saved), default_active=bool(saved.get("use_fluxmem", False)))
    return model


class _SwitchedModelType(type):
    """Makes the factory behave like the official class: attributes forward to it, and
    ``isinstance(model, factory)`` holds for official instances that carry the switch."""

    def __getattr__(cls, name):
        return getattr(cls._official, name)

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, cls._official) and get_state(instance) is not None


class _SwitchedModel(metaclass=_SwitchedModelType):
    _official: type = object

    def __new__(cls, config, *args, **kwargs):
        return _install(cls._official(config, *args, **kwargs))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return _install(cls._official.from_pretrained(*args, **kwargs))


def _drop_in(name: str) -> type:
    official = getattr(transformers, name)
    doc = f"``transformers.{name}`` with ``use_fluxmem`` (off unless asked)."
    return _SwitchedModelType(name, (_SwitchedModel,), {"_official": official, "__doc__": doc, "__module__": __name__})


Qwen2VLForConditionalGeneration = _drop_in("Qwen2VLForConditionalGeneration")
Qwen2_5_VLForConditionalGeneration = _drop_in("Qwen2_5_VLForConditionalGeneration")
Qwen3VLForConditionalGeneration = _drop_in("Qwen3VLForConditionalGeneration")
Qwen3VLMoeForConditionalGeneration = _drop_in("Qwen3VLMoeForConditionalGeneration")
Qwen3_5ForConditionalGeneration = _drop_in("Qwen3_5ForConditionalGeneration")
Qwen3_5MoeForConditionalGeneration = _drop_in("Qwen3_5MoeForConditionalGeneration")

Qwen2VLProcessor = transformers.Qwen2VLProcessor
Qwen2_5_VLProcessor = transformers.Qwen2_5_VLProcessor
Qwen3VLProcessor = transformers.Qwen3VLProcessor
