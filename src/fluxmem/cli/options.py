"""Command-line options shared by several subcommands, and their conversion to settings."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-heavy: imported when a command runs, never for --help
    from ..inference import SamplingOptions
    from ..memory import FluxMemConfig


def add_model_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required, help="Hugging Face id or local directory of a Qwen-VL model")
    group.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    group.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    group.add_argument("--attn-implementation", default=None, help="sdpa, eager or flash_attention_2")


_FLUXMEM_FLAGS = ("short_frames", "medium_frames", "direct_drop_sim", "pair_sim_threshold")


def add_memory_options(parser: argparse.ArgumentParser, *, short: int = 8, medium: int = 64, budget: bool = True) -> None:
    group = parser.add_argument_group("memory (FluxMem)")
    group.add_argument("--memory", default=None, metavar="METHOD",
                       help="memory method: fluxmem (default), recent:4, uniform:4, evs:0.5, ... (`fluxmem memories` lists them)")
    if budget:
        group.add_argument("--budget", default=None,
                           help="visual tokens per video: a count (1200), a fraction (0.35) or match:fluxmem")
    group.add_argument("--short-frames", type=int, default=short, help="raw frames kept whole (default %(default)s)")
    group.add_argument("--medium-frames", type=int, default=medium, help="raw frames at TAS level (default %(default)s)")
    group.add_argument("--direct-drop-sim", type=float, default=0.8, help="TAS direct-drop similarity")
    group.add_argument("--pair-sim-threshold", type=float, default=None, help="fixed TAS threshold instead of Otsu")
    group.add_argument("--no-fluxmem", action="store_true", help="run the unmodified model (baseline)")
    parser.set_defaults(fluxmem_flag_defaults={"short_frames": short, "medium_frames": medium, "direct_drop_sim": 0.8,
                                               "pair_sim_threshold": None})  # fmt: skip


def add_sampling_options(parser: argparse.ArgumentParser, *, fps: float = 1.0, max_pixels: int | None = None) -> None:
    group = parser.add_argument_group("frame sampling")
    group.add_argument("--fps", type=float, default=fps, help="frames per second to sample (default %(default)s)")
    group.add_argument("--max-frames", type=int, default=None)
    group.add_argument("--min-frames", type=int, default=None)
    group.add_argument("--max-pixels", type=int, default=max_pixels, help="pixels per frame, e.g. 401408 = 512*28*28")
    group.add_argument("--min-pixels", type=int, default=None)


def memory_config(args: argparse.Namespace) -> FluxMemConfig:
    from ..memory import FluxMemConfig

    return FluxMemConfig(
        short_frames=args.short_frames,
        medium_frames=args.medium_frames,
        direct_drop_sim=args.direct_drop_sim,
        pair_sim_threshold=args.pair_sim_threshold,
    )


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


def check_max_new_tokens(value: int) -> None:
    from ..errors import ConfigError

    if value < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1 (the answer's length limit in tokens), got {value}.")
