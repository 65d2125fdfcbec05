"""Load a supported model and its processor from a Hugging Face id or a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .adapters import attach, registry
from .errors import ConfigError, FluxMemError, UnsupportedModelError
from .memory import FluxMemConfig

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(
    model_id: str | os.PathLike,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    fluxmem: FluxMemConfig | None = None,
    use_fluxmem: bool = True,
):
    """``(model, processor)`` with the FluxMem switch installed (on unless ``use_fluxmem=False``).

    ``model_id`` is a local directory saved with ``save_pretrained`` or a Hugging Face id. With
    ``device="auto"`` a GPU is used when present (``device_map="auto"`` spreads a large model over
    several GPUs through accelerate). Settings saved under ``config.fluxmem`` (``fluxmem train``)
    are the defaults for any option not given.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = str(model_id)
    if Path(source).expanduser().exists():
        source = str(Path(source).expanduser())
    elif not _looks_like_hub_id(source):
        raise FluxMemError(
            f"model directory {source!r} does not exist; pass a saved model directory or a Hugging Face id "
            "such as Qwen/Qwen2.5-VL-7B-Instruct."
        )
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    config = supported_config(source)
    config_fluxmem = FluxMemConfig.from_dict(getattr(config, "fluxmem", None)) if fluxmem is None else fluxmem
    vision = getattr(config, "vision_config", None)
    config_fluxmem.grid_steps(int(getattr(vision, "temporal_patch_size", 2)))  # fail before loading weights
    device = resolve_device(device)
    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device == "cuda":
        kwargs["device_map"] = "auto"
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if device not in ("cuda",):
        model = model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(source)
    attach(model, config_fluxmem, active=use_fluxmem)
    return model, processor


def supported_config(source: str | os.PathLike):
    """The model config at ``source``, with one clear error when it cannot be read or its family
    has no adapter (checked before any weight is loaded)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise FluxMemError(
            f"cannot load a model config from {str(source)!r} ({error.__class__.__name__}): pass a local directory "
            "saved with save_pretrained, or a Hugging Face id reachable from this machine."
        ) from None
    if config.model_type not in registry.known_model_types():
        raise UnsupportedModelError(
            f"{str(source)!r} is a {config.model_type!r} model; fluxmem supports "
            f"{', '.join(registry.supported_families())}."
        )
    return config


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))
