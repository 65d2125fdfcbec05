"""``fluxmem ask VIDEO QUESTION --model M``: the main job, one answer about one video."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser("ask", help="answer one question about a video", description=__doc__)
    parser.add_argument("video", help="path to a video file")
    parser.add_argument("question", help="the question to ask")
    options.add_model_options(parser)
    options.add_memory_options(parser)
    options.add_sampling_options(parser)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import answer
    from ..video import probe_video

    sampling = options.sampling_options(args)
    options.memory_method(args)
    options.check_max_new_tokens(args.max_new_tokens)
    options.check_model_options(args)
    if not args.question.strip():
        raise InputError("the question is empty; pass the text to ask about the video.")
    probe_video(args.video)  # a missing or broken video fails here, before the model loads
    model, processor = options.load(args)
    result = answer(
        model,
        processor,
        args.video,
        args.question,
        sampling=sampling,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({"answer": result.text, "memory": result.memory, "timings_ms": result.timings_ms}))
        return 0
    print(result.text)
    print(format_memory_line(result.memory, result.timings_ms, enabled=not args.no_fluxmem))
    return 0


def format_memory_line(memory: dict, timings_ms: dict, *, enabled: bool) -> str:
    """One line: visual tokens before and after (per tier for FluxMem), and where the time went."""
    from ..memories import MemoryStats

    time_part = ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in timings_ms.items())
    if not enabled or not memory.get("videos"):
        return f"[memory] off | {time_part}"
    return f"{MemoryStats.from_dict(memory).line()} | {time_part}"
