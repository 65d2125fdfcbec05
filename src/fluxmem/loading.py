"""Load a supported model and its processor from a Hugging Face id or a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .adapters import install, registry
from .errors import ConfigError, FluxMemError, UnsupportedModelError
from .memory import FluxMemConfig, check_config

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


def resolve_device(device: str = "auto", *, flag: str = "device", here: bool = True) -> str:
    """The device to run on: ``auto`` is a GPU when torch sees one, else the CPU. A device that does
    not exist here is an error naming ``flag`` (``cuda`` never quietly runs on the CPU);
    ``here=False`` checks the name alone (a command line written for another machine)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if not here and parsed.type in ("cpu", "cuda", "mps"):
        return device
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
    positions: str = "original",
):
    """``(model, processor)`` with the FluxMem switch installed: the memory settings are ``fluxmem``,
    else those saved under ``config.fluxmem`` (``fluxmem train``), else the defaults; on by default
    unless ``use_fluxmem=False`` (then only ``generate(..., use_fluxmem=True)`` turns it on).

    ``model_id`` is a local directory saved with ``save_pretrained`` or a Hugging Face id. With
    ``device="auto"`` a GPU is used when present (``device_map="auto"`` spreads a large model over
    several GPUs through accelerate). Settings saved under ``config.fluxmem`` (``fluxmem train``)
    are the defaults for any option not given. ``positions`` is the switch's position rule
    (``"original"``, or ``"transformers"`` for the installed transformers' numbering).
    """
    from transformers import AutoModelForImageTextToText

    source = model_source(model_id)
    fluxmem = check_config(fluxmem, "fluxmem")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    if (Path(source) / "adapter_config.json").is_file():  # LoRA adapters (fluxmem train with lora: true)
        return _load_adapters(source, device=device, dtype=dtype, attn_implementation=attn_implementation,
                              fluxmem=fluxmem, use_fluxmem=use_fluxmem, positions=positions)
    config = supported_config(source)
    saved = (getattr(config, "fluxmem", None) or {}) if fluxmem is None else {}
    config_fluxmem = FluxMemConfig.from_dict(saved) if fluxmem is None else fluxmem
    vision = getattr(config, "vision_config", None)
    config_fluxmem.grid_steps(int(getattr(vision, "temporal_patch_size", 2)))  # fail before loading weights
    device = resolve_device(device)
    processor = load_processor(source)  # cheap, and a directory without processor files fails now
    check_weight_files(source)
    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device == "cuda":
        kwargs["device_map"] = "auto"
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if device not in ("cuda",):
        model = model.to(device)
    model.eval()
    # a memory method and budget saved by `fluxmem train --memory` come back with the settings
    install(model, config_fluxmem, default_active=use_fluxmem, positions=positions, memory=saved.get("memory"),
            budget=saved.get("budget"))  # fmt: skip
    return model, processor


def local_model_paths(model_id) -> list[str]:
    """The directories on this disk that loading ``model_id`` reads: the model's own directory and,
    for LoRA adapters, their base model's (none for a hub id), so outputs can be kept out of them."""
    import json

    if not model_id or not str(model_id).strip() or not Path(str(model_id)).expanduser().is_dir():
        return []
    source = Path(str(model_id)).expanduser()
    paths = [str(source)]
    try:
        base = json.loads((source / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        base = None
    if isinstance(base, str) and base.strip():  # a relative base: as given, and from the adapters' folder
        for candidate in (Path(base).expanduser(), source / Path(base).expanduser()):
            if candidate.is_dir() and os.path.realpath(candidate) not in map(os.path.realpath, paths):
                paths.append(os.path.realpath(candidate))
    return paths


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
    base = adapter_base_model(source)
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
    install(model, state.config, default_active=state.default_active, positions=state.positions,
            memory=saved.get("memory", state.memory), budget=saved.get("budget", state.budget))  # fmt: skip
    return model, processor


def model_source(model_id) -> str:
    """``model_id`` as a local directory (``~`` expanded) or a Hugging Face id; one clear error for
    anything else (None, an empty name, a file, a path that does not exist)."""
    if not isinstance(model_id, (str, os.PathLike)) or not str(model_id).strip():
        raise ConfigError(
            f"the model must be a saved model directory or a Hugging Face id such as Qwen/Qwen2.5-VL-7B-Instruct, got {model_id!r}."
        )
    source = str(model_id)
    path = Path(source).expanduser()
    if path.is_file():
        raise ConfigError(
            f"model {source!r} is a file; pass the model's directory (the one holding config.json and the weights) or a Hugging Face id."
        )
    if path.is_dir():
        return str(path)
    if not _looks_like_hub_id(source):
        raise FluxMemError(
            f"model directory {source!r} does not exist; pass a saved model directory or a Hugging Face id "
            "such as Qwen/Qwen2.5-VL-7B-Instruct."
        )
    return source


def load_processor(source: str):
    """The processor saved with the model; one line when the directory holds none."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        if not Path(source).is_dir():
            raise FluxMemError(f"cannot load the processor of {source!r} ({error.__class__.__name__}); check the id and the network.") from None
        raise FluxMemError(
            f"model directory {source!r} holds no usable processor (preprocessor_config.json, tokenizer files); save it there: "
            "AutoProcessor.from_pretrained(ORIGINAL_MODEL).save_pretrained(DIRECTORY)."
        ) from None


def check_weight_files(source: str) -> None:
    """Every ``*.safetensors`` file of a local model directory has a whole header (a truncated or
    partly copied file fails here in one line, not deep inside the loader)."""
    from safetensors import safe_open

    if not Path(source).is_dir():
        return
    for file in sorted(Path(source).glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error type from Rust
            raise FluxMemError(
                f"weights file {str(file)!r} is damaged or incomplete ({str(error).split(':')[-1].strip()}); copy or download it again."
            ) from None


def token_pixels(model_id) -> int | None:
    """Pixels of one visual token, ``(patch_size * spatial_merge_size)²``, from the model's config
    alone (None for a LoRA adapter directory: its base model decides)."""
    source = model_source(model_id)
    if (Path(source) / "adapter_config.json").is_file():
        return None
    vision = getattr(supported_config(source), "vision_config", None)
    factor = int(getattr(vision, "patch_size", 14)) * int(getattr(vision, "spatial_merge_size", 2))
    return factor * factor
def adapter_base_model(adapter_dir: str | os.PathLike) -> str:
    """The base model of the LoRA adapters in ``adapter_dir``, from its ``adapter_config.json``: a
    Hugging Face id or an absolute path as stored (``fluxmem train`` stores one of those), a relative
    path resolved against ``adapter_dir`` itself, so that the adapters load from any directory."""
    import json

    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"cannot read {str(config_file)!r} ({error.__class__.__name__}); "
                          "it must be the JSON object peft saves with the adapters.") from None
    if not base or not isinstance(base, str):
        raise ConfigError(f"{str(adapter_dir)!r} holds LoRA adapters but adapter_config.json names no base model; "
                          "set base_model_name_or_path to the base model's Hugging Face id or absolute path.")
    path = Path(base).expanduser()
    if path.is_absolute():
        return str(path)
    beside = adapter_dir / path
    if beside.exists():
        return str(beside.resolve())
    if _looks_like_hub_id(base):
        return base
    raise ConfigError(
        f"{str(adapter_dir)!r} holds LoRA adapters for the base model {base!r}, a relative path that is not beside "
        f"the adapters ({str(beside)!r}); set base_model_name_or_path in adapter_config.json to the base model's "
        "absolute path or Hugging Face id."
    )


def local_or_hub(model_id: str | os.PathLike) -> str:
    """``model_id`` as an absolute path when it names an existing local directory or file, else
    unchanged (a Hugging Face id): what a saved record should hold to work from any directory."""
    path = Path(model_id).expanduser()
    return str(path.resolve()) if path.exists() else str(model_id)


def supported_config(source: str | os.PathLike):
    """The model config at ``source``, with one clear error when it cannot be read or its family
    has no adapter (checked before any weight is loaded)."""
    from transformers import AutoConfig

    _check_config_file(Path(source))
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


def _check_config_file(directory: Path) -> None:
    """A local model directory's config.json exists and is JSON (transformers reports a broken one
    as if the directory were not a model)."""
    import json

    if not directory.is_dir():
        return
    file = directory / "config.json"
    if not file.is_file():
        raise FluxMemError(f"model directory {str(directory)!r} has no config.json; pass a directory saved with save_pretrained.")
    try:
        json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f"line {error.lineno} column {error.colno}: {error.msg}" if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise FluxMemError(f"{str(file)!r} is not valid JSON ({where}); restore it from the original model.") from None


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))
