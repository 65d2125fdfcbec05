"""Command-line options shared by several subcommands, and their conversion to settings."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-heavy: imported when a command runs, never for --help
    from ..inference import SamplingOptions
    from ..memory import FluxMemConfig

# ------------------------------------------------------------------------------ option types
# argparse ``type=`` converters: a bad value is one line, ``fluxmem CMD: error: argument --X: ...``,
# exit status 2, before anything loads.

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (rates: --fps, --animation-fps)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be seconds >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A finite number in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"is a fraction and must lie in [0, 1], got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def whole_number(text: str) -> int:
    return _number(text, int)


def pixel_budget(text: str) -> int:
    """Pixels per frame: a positive integer (the model's own floor, one token, is checked once its
    config is read: :func:`check_model`)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a number of pixels >= 1, e.g. 401408 = 512*28*28, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535 (0: any free port), got {text!r}")
    return value


def similarity(text: str) -> float | None:
    """A cosine similarity in [-1, 1], or ``none`` (the step is off)."""
    if text.strip().lower() == "none":
        return None
    value = _number(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"is a cosine similarity in [-1, 1] (or none), got {text!r}")
    return value


def attention(text: str) -> str:
    """One of transformers' attention implementations, or a kernel from the Hub (``owner/name``)."""
    if text not in ATTENTION_IMPLEMENTATIONS and text.count("/") != 1:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)} (or a Hub kernel such as kernels-community/flash-attn), got {text!r}"
        )
    return text


def model_source(text: str) -> str:
    """A saved model directory or a Hugging Face id (not empty, not a file such as a video)."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; pass a saved model directory or a Hugging Face id such as Qwen/Qwen2.5-VL-7B-Instruct")
    if Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file; pass the model's directory (the one holding config.json and the weights) or a Hugging Face id"
        )
    return text


def add_model_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required, type=model_source, help="Hugging Face id or local directory of a Qwen-VL model")
    group.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    group.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    group.add_argument("--attn-implementation", default=None, type=attention, help=", ".join(ATTENTION_IMPLEMENTATIONS))
    # adapters.base.POSITION_RULES, written out: --help imports no torch
    group.add_argument("--positions", choices=("original", "transformers"), default="original",
                       help="M-RoPE positions: original (the rule Qwen2-VL / Qwen2.5-VL were trained with: text after a "
                       "video one past its largest position) or transformers (the installed transformers' numbering); "
                       "default %(default)s")  # fmt: skip


_FLUXMEM_FLAGS = ("short_frames", "medium_frames", "direct_drop_sim", "pair_sim_threshold")


def add_memory_options(parser: argparse.ArgumentParser, *, short: int = 8, medium: int = 64, budget: bool = True,
                       several: bool = False) -> None:
    """FluxMem's settings, ``--memory`` (with ``several``: a comma-separated list of methods to compare) and ``--budget``."""
    group = parser.add_argument_group("memory (FluxMem)")
    group.add_argument("--memory", default=None, metavar="SPEC[,SPEC...]" if several else "SPEC",
                       help="memory method (fluxmem, recent:4, uniform:4, random, evs, vidcom2, none, ...; default fluxmem; "
                       "fluxmem memories lists them)"
                       + ("; several, comma separated, are compared on the same decoded and encoded videos" if several else ""))
    if budget:
        group.add_argument("--budget", default=None, metavar="BUDGET",
                           help="visual tokens per video: match:fluxmem (what FluxMem keeps), a fraction (0.35) or a count (1200)")
    # whole numbers here; FluxMemConfig says what else a tier needs (>= 0, whole grid steps)
    group.add_argument("--short-frames", type=whole_number, default=short, help="raw frames kept whole (default %(default)s)")
    group.add_argument("--medium-frames", type=whole_number, default=medium, help="raw frames at TAS level (default %(default)s)")
    group.add_argument("--direct-drop-sim", type=similarity, default=0.8, help="TAS direct-drop similarity (none: off)")
    group.add_argument("--pair-sim-threshold", type=similarity, default=None, help="fixed TAS threshold instead of Otsu")
    group.add_argument("--no-fluxmem", action="store_true", help="run the unmodified model (baseline)")
    parser.set_defaults(fluxmem_flag_defaults={"short_frames": short, "medium_frames": medium, "direct_drop_sim": 0.8,
                                               "pair_sim_threshold": None})  # fmt: skip


def add_sampling_options(parser: argparse.ArgumentParser, *, fps: float = 1.0, max_pixels: int | None = None) -> None:
    group = parser.add_argument_group("frame sampling")
    group.add_argument("--fps", type=positive_float, default=fps, help="frames per second to sample (default %(default)s)")
    group.add_argument("--max-frames", type=positive_int, default=None)
    group.add_argument("--min-frames", type=positive_int, default=None)
    add_pixel_options(group, max_pixels=max_pixels)


def add_pixel_options(group, *, max_pixels: int | None = None) -> None:
    group.add_argument("--max-pixels", type=pixel_budget, default=max_pixels, help="pixels per frame, e.g. 401408 = 512*28*28")
    group.add_argument("--min-pixels", type=pixel_budget, default=None)


def memory_config(args: argparse.Namespace) -> FluxMemConfig:
    """The memory settings of the options, checked as the model will use them: tiers hold whole
    temporal grid steps (2 raw frames on every supported family), and a count that is not a
    multiple of that gets one line saying what it becomes."""
    import sys

    from ..memory import FluxMemConfig
    from ..video import FRAME_FACTOR

    config = FluxMemConfig(
        short_frames=args.short_frames,
        medium_frames=args.medium_frames,
        direct_drop_sim=args.direct_drop_sim,
        pair_sim_threshold=args.pair_sim_threshold,
    )
    if getattr(args, "no_fluxmem", False):
        return config
    short, medium = config.grid_steps(FRAME_FACTOR)
    if not getattr(args, "memory_note_shown", False):
        args.memory_note_shown = True  # memory_config runs more than once per command; say it once
        for flag, frames, steps in (("--short-frames", config.short_frames, short), ("--medium-frames", config.medium_frames, medium)):
            if frames % FRAME_FACTOR:
                command = getattr(args, "command", None) or "fluxmem"
                print(f"fluxmem {command}: note: {flag} {frames} becomes {steps * FRAME_FACTOR} ({steps} grid "
                      f"step{'s' * (steps != 1)} of {FRAME_FACTOR} frames): the memory holds whole grid steps.", file=sys.stderr)
    return config


def memory_method(args: argparse.Namespace):
    """``(method, budget)`` of ``--memory`` / ``--budget`` and the FluxMem flags: ``method`` is
    ``None`` for plain FluxMem (its settings: :func:`memory_config`); FluxMem flags given with
    another method are an error."""
    from ..errors import ConfigError
    from ..memories import Budget, FluxMem, get

    config = memory_config(args)
    budget = getattr(args, "budget", None)
    budget = None if budget is None else Budget.parse(budget)
    if args.memory is None:
        return None, budget
    method = get(args.memory)
    defaults = getattr(args, "fluxmem_flag_defaults", {})
    changed = [name for name in _FLUXMEM_FLAGS if name in defaults and getattr(args, name) != defaults[name]]
    if isinstance(method, FluxMem):
        method = method.replace(**{name: getattr(config, name) for name in changed})
    elif changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise ConfigError(f"{flags} set FluxMem's memory; --memory {args.memory} does not take them (drop them, or use --memory fluxmem).")
    return method, budget


def check_fluxmem_flags_used(args: argparse.Namespace, specs: list[str]) -> None:
    """FluxMem flags given with several methods set every FluxMem method of the list and
    ``--budget match:fluxmem``; given where no FluxMem runs at all, they are an error."""
    from ..errors import ConfigError
    from ..memories import METHODS, Budget, FluxMem, parse

    defaults = getattr(args, "fluxmem_flag_defaults", {})
    changed = [name for name in _FLUXMEM_FLAGS if name in defaults and getattr(args, name) != defaults[name]]
    budget = None if getattr(args, "budget", None) is None else Budget.parse(args.budget)
    named = [*specs, *([str(budget.value)] if budget is not None and budget.kind == "match" else [])]
    if changed and not any(issubclass(METHODS[parse(spec)[0]], FluxMem) for spec in named):
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise ConfigError(f"{flags} set FluxMem's memory; --memory {','.join(specs)} runs no FluxMem method "
                          "(drop them, or add fluxmem to the list).")


def sampling_options(args: argparse.Namespace, **extra) -> SamplingOptions:
    from ..inference import SamplingOptions

    return SamplingOptions(
        fps=args.fps,
        max_frames=args.max_frames,
        min_frames=getattr(args, "min_frames", None),
        max_pixels=args.max_pixels,
        min_pixels=args.min_pixels,
        **extra,
    )


def load(args: argparse.Namespace):
    """``(model, processor)`` for the model options, memory on unless ``--no-fluxmem``."""
    from ..loading import load_model

    config = memory_config(args)  # validate before loading anything heavy
    method, budget = memory_method(args)
    check_model_options(args)
    model, processor = load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        fluxmem=config,
        use_fluxmem=not args.no_fluxmem,
        positions=args.positions,
    )
    if method is not None or budget is not None:
        from ..adapters import install

        install(model, config, default_active=not args.no_fluxmem, memory=method, budget=budget)
    return model, processor


def check_model_options(args: argparse.Namespace) -> None:
    """Validate --device, --dtype and --attn-implementation before anything heavy runs.

    A device that does not exist here is an error (``--device cuda`` never quietly runs on the
    CPU); ``flash_attention_2`` without the flash-attn package (or without a GPU) falls back to
    ``sdpa`` with one line saying so.
    """
    import importlib.util
    import sys

    import torch

    from ..errors import ConfigError
    from ..loading import DTYPES, resolve_device

    device = args.device
    resolve_device(device, flag="--device")
    if args.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of auto, bfloat16, float16 or float32, got {args.dtype!r}.")
    attention = args.attn_implementation
    if attention in ("flash_attention_2", "flash_attention_3"):
        package = "flash_attn" if attention == "flash_attention_2" else "flash_attn_interface"
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        reason = None
        if importlib.util.find_spec(package) is None:
            reason = f"the {package.replace('_', '-')} package is not installed"
        elif not on_gpu:
            reason = "it needs a CUDA GPU"
        if reason:
            command = getattr(args, "command", None) or "fluxmem"
            print(f"fluxmem {command}: {attention} is not usable ({reason}); using sdpa attention instead.", file=sys.stderr)
            args.attn_implementation = "sdpa"


def check_model(args: argparse.Namespace) -> None:
    """The model's directory and config (a missing or broken config.json, an unsupported family),
    then --min-pixels / --max-pixels against each other and against the model's floor of one
    visual token: from the config alone, before any weight loads."""
    from ..loading import token_pixels
    from ..video import check_pixel_budget

    floor = token_pixels(args.model)
    check_pixel_budget(getattr(args, "min_pixels", None), getattr(args, "max_pixels", None), floor,
                       flags=("--min-pixels", "--max-pixels"))
