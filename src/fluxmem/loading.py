"""Load a supported model and its processor from a Hugging Face id or a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .adapters import install, registry
from .errors import ConfigError, FluxMemError, UnsupportedModelError
from .memory import FluxMemConfig

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


def resolve_device(device: str = "auto", *, flag: str = "device") -> str:
    """The device to run on: ``auto`` is a GPU when torch sees one, else the CPU. A device that does
    not exist here is an error naming ``flag`` (``cuda`` never quietly runs on the CPU)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{flag} {device}: this machine has no CUDA GPU that torch can use; pass {flag} cpu (or auto).")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"{flag} {device}: there is no GPU {parsed.index} (GPUs here: 0..{count - 1}).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {device}: Apple's MPS is not available on this machine; pass {flag} cpu (or auto).")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{flag} {device!r}: fluxmem runs on cpu, cuda or mps; pass one of those (or auto).")
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
    """``(model, processor)`` with the FluxMem switch installed: the memory settings are ``fluxmem``,
    else those saved under ``config.fluxmem`` (``fluxmem train``), else the defaults; on by default
    unless ``use_fluxmem=False`` (then only ``generate(..., use_fluxmem=True)`` turns it on).

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
    if (Path(source) / "adapter_config.json").is_file():  # LoRA adapters (fluxmem train with lora: true)
        return _load_adapters(source, device=device, dtype=dtype, attn_implementation=attn_implementation,
                              fluxmem=fluxmem, use_fluxmem=use_fluxmem)
    config = supported_config(source)
    saved = (getattr(config, "fluxmem", None) or {}) if fluxmem is None else {}
    config_fluxmem = FluxMemConfig.from_dict(saved) if fluxmem is None else fluxmem
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
    # a memory method and budget saved by `fluxmem train --memory` come back with the settings
    install(model, config_fluxmem, default_active=use_fluxmem, memory=saved.get("memory"), budget=saved.get("budget"))
    return model, processor


def _load_adapters(source: str, *, fluxmem: FluxMemConfig | None, **options):
    """Base model named in ``adapter_config.json`` + the LoRA adapters, merged into the weights;
    the adapter directory's FluxMem settings (``fluxmem.json``) are the defaults."""
    import json

    try:
        from peft import PeftModel
    except ImportError:
        merged = Path(source) / "merged"
        hint = f", or pass the merged model {str(merged)!r}" if merged.is_dir() else ""
        raise ConfigError(f"{source!r} holds LoRA adapters; loading them needs peft: pip install peft{hint}.") from None
    base = json.loads((Path(source) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{source!r} holds LoRA adapters but adapter_config.json names no base model; set base_model_name_or_path.")
    saved = {}
    if fluxmem is None and (Path(source) / "fluxmem.json").is_file():
        saved = json.loads((Path(source) / "fluxmem.json").read_text())
        fluxmem = FluxMemConfig.from_dict(saved)
    try:
        model, processor = load_model(base, fluxmem=fluxmem, **options)  # use_fluxmem passes through
    except FluxMemError as error:
        raise FluxMemError(f"{source!r} holds LoRA adapters for the base model {base!r}, which cannot be loaded: {error}") from None
    from .adapters import detach, get_state

    state = get_state(model)
    detach(model)  # peft wraps the plain model; the switch goes back on the merged one
    import warnings

    with warnings.catch_warnings():  # peft (not fluxmem) still reads transformers' old checkpointing name
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model = PeftModel.from_pretrained(model, source).merge_and_unload()
    model.eval()
    if (Path(source) / "preprocessor_config.json").is_file() or (Path(source) / "processor_config.json").is_file():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(source)
    install(model, state.config, default_active=state.default_active, memory=saved.get("memory", state.memory),
            budget=saved.get("budget", state.budget))  # fmt: skip
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
