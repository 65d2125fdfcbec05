"""``fluxmem`` command line: one module per subcommand, each with ``register(subparsers)``.

Errors that fluxmem raises on purpose (bad input, missing files, unsupported models) print one
line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import FluxMemError

# name -> module under fluxmem.cli; imported only when listed in --help or run
SUBCOMMANDS = ("ask", "stream", "eval", "score", "train", "visualize", "demo")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fluxmem",
        description="FluxMem: training-free hierarchical memory for long and live video with Qwen-VL models.",
    )
    parser.add_argument("--version", action="version", version=f"fluxmem {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a subcommand not shipped in this build
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FluxMemError as error:
        print(f"fluxmem {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fluxmem {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
