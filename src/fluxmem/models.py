"""Drop-in model names: the official transformers classes with the FluxMem switch installed.

``fluxmem.Qwen2_5_VLForConditionalGeneration.from_pretrained(...)`` returns an instance of the
OFFICIAL ``transformers.Qwen2_5_VLForConditionalGeneration`` (same weights, config, saving,
loading, peft and accelerate behaviour) whose ``generate`` also takes
``use_fluxmem=True, short_frames=8, medium_frames=64``. The memory is off unless asked, or
unless the checkpoint's config records FluxMem settings (``fluxmem train`` writes them).

A factory rather than a subclass: transformers applies its checkpoint key conversions only to its
own classes, so a subclass defined here would load Qwen2.5-VL checkpoints with the language
model left at random initialisation.
"""

from __future__ import annotations

import transformers

from .adapters import attach, get_state
from .memory import FluxMemConfig


def _install(model):
    saved = getattr(model.config, "fluxmem", None) or {}
    attach(model, FluxMemConfig.from_dict(saved), active=bool(saved.get("use_fluxmem", False)))
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

    @classmethod
    def from_config(cls, config, **kwargs):
        return _install(cls._official._from_config(config, **kwargs))

    _from_config = from_config


class Qwen2_5_VLForConditionalGeneration(_SwitchedModel):
    """``transformers.Qwen2_5_VLForConditionalGeneration`` with ``use_fluxmem`` (off unless asked)."""

    _official = transformers.Qwen2_5_VLForConditionalGeneration


Qwen2_5_VLProcessor = transformers.Qwen2_5_VLProcessor
