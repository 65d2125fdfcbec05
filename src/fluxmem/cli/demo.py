"""``fluxmem demo --model M``: a local web page to stream a video into the memory and ask questions.

Upload a video or record one with the webcam, press play, ask at any moment: answers cover the
video up to the playback position and come with their latency; the memory's tokens per tier,
retained fraction and latest grid steps are shown live. Each browser tab has its own session.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="web demo: stream a video and ask questions (Gradio)", description=__doc__)
    options.add_model_options(parser)
    options.add_memory_options(parser)
    group = parser.add_argument_group("streaming")
    group.add_argument("--fps", type=float, default=1.0, help="frames per second the session samples (default %(default)s)")
    group.add_argument("--max-pixels", type=int, default=None, help="pixels per frame, e.g. 401408 = 512*28*28")
    group.add_argument("--min-pixels", type=int, default=None)
    group.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default %(default)s)")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    server.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import build_demo, serve

    if args.no_fluxmem:
        raise ConfigError("the demo runs on the FluxMem streaming session; run it without --no-fluxmem.")
    if args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}.")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}.")
    config = options.memory_config(args)
    model, processor = options.load(args)
    demo = build_demo(
        model,
        processor,
        config=config,
        fps=args.fps,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
    )
    print(f"FluxMem demo on http://{args.host}:{args.port}/ (Ctrl+C to stop)")
    serve(demo, host=args.host, port=args.port, block=True)
    return 0
