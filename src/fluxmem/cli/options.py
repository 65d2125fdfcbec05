"""Command-line options shared by several subcommands, and their conversion to settings."""

from __future__ import annotations

import argparse

from ..inference import SamplingOptions
from ..memory import FluxMemConfig


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, help="Hugging Face id or local directory of a Qwen-VL model")
    group.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    group.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    group.add_argument("--attn-implementation", default=None, help="sdpa, eager or flash_attention_2")


def add_memory_options(parser: argparse.ArgumentParser, *, short: int = 8, medium: int = 64) -> None:
    group = parser.add_argument_group("memory (FluxMem)")
    group.add_argument("--short-frames", type=int, default=short, help="raw frames kept whole (default %(default)s)")
    group.add_argument("--medium-frames", type=int, default=medium, help="raw frames at TAS level (default %(default)s)")
    group.add_argument("--direct-drop-sim", type=float, default=0.8, help="TAS direct-drop similarity")
    group.add_argument("--pair-sim-threshold", type=float, default=None, help="fixed TAS threshold instead of Otsu")
    group.add_argument("--no-fluxmem", action="store_true", help="run the unmodified model (baseline)")


def add_sampling_options(parser: argparse.ArgumentParser, *, fps: float = 1.0, max_pixels: int | None = None) -> None:
    group = parser.add_argument_group("frame sampling")
    group.add_argument("--fps", type=float, default=fps, help="frames per second to sample (default %(default)s)")
    group.add_argument("--max-frames", type=int, default=None)
    group.add_argument("--min-frames", type=int, default=None)
    group.add_argument("--max-pixels", type=int, default=max_pixels, help="pixels per frame, e.g. 401408 = 512*28*28")
    group.add_argument("--min-pixels", type=int, default=None)


def memory_config(args: argparse.Namespace) -> FluxMemConfig:
    return FluxMemConfig(
        short_frames=args.short_frames,
        medium_frames=args.medium_frames,
        direct_drop_sim=args.direct_drop_sim,
        pair_sim_threshold=args.pair_sim_threshold,
    )


def sampling_options(args: argparse.Namespace, **extra) -> SamplingOptions:
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
    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        fluxmem=config,
        use_fluxmem=not args.no_fluxmem,
    )
