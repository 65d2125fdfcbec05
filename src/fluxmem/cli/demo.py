"""``fluxmem demo --model M``: a local web page that streams a live camera or a video into the memory.

Live camera: frames stream from the webcam into the memory as they are captured; ask at any moment,
answered from everything the camera has shown. Video: upload one (or record a clip) and press play;
answers cover the video up to the playback position. Each answer comes with its latency; the
memory's tokens per tier, retained fraction and latest grid steps are shown live. Each browser tab
has its own session. The address is printed once the server is up.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="web demo: stream a live camera or a video and ask questions (Gradio)", description=__doc__)
    options.add_model_options(parser)
    options.add_memory_options(parser)
    group = parser.add_argument_group("streaming")
    group.add_argument("--fps", type=options.positive_float, default=1.0, help="frames per second the session samples (default %(default)s)")
    options.add_pixel_options(group)
    group.add_argument("--max-new-tokens", type=options.positive_int, default=64, help="answer length limit (default %(default)s)")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    server.add_argument("--port", type=options.port, default=7860, help="port (default %(default)s; 0: any free port)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import build_demo, serve

    if args.no_fluxmem:
        raise ConfigError("the demo runs on the FluxMem streaming session; run it without --no-fluxmem.")
    config = options.memory_config(args)
    options.check_model_options(args)
    port = check_port_free(args.host, args.port)  # before the model loads, and before any URL is printed
    options.check_model(args)
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
    url = serve(demo, host=args.host, port=port, block=False, quiet=True)  # quiet: no Gradio share hint
    print(f"FluxMem demo on {url} (Ctrl+C to stop)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0


def check_port_free(host: str, port: int) -> int:
    """The port to serve on: ``port`` when it is free (one line, before the model loads, when it is
    taken), or for port 0 a free port that the system picks now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({error.strerror}); use e.g. 127.0.0.1 or 0.0.0.0.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"--port {port}: {host}:{port} is not free ({error.strerror}; another demo or server?); pass another --port."
            ) from None
        return probe.getsockname()[1]
