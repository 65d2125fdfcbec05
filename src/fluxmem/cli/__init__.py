"""``fluxmem`` command line: one module per subcommand, each with ``register(subparsers)``.

A subcommand module imports only argparse-level things at the top (``--help`` must not load
torch); its handler imports what it runs. To add one, write ``cli/NAME.py`` with ``register`` and
add NAME to ``SUBCOMMANDS``.

Errors that fluxmem raises on purpose (bad input, missing files, unsupported models) print one
line and exit with status 2; Ctrl-C at any point (start-up included) prints one line and exits
with 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from ..errors import FluxMemError

# name -> module under fluxmem.cli; imported only when listed in --help or run
SUBCOMMANDS = ("quickstart", "ask", "stream", "eval", "score", "compare", "train", "visualize", "demo", "serve", "memories",
               "doctor")


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line, ``fluxmem CMD: error: ...`` (no usage block above it), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(
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
    for subparser in subparsers.choices.values():  # docstrings use ``literal`` markup; help shows plain text
        subparser.description = _plain(subparser.description)
        subparser.epilog = _plain(subparser.epilog)
    return parser


def _plain(text: str | None) -> str | None:
    return text.replace("``", "") if text else text


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # e.g. while a command's modules are still importing
        print("fluxmem: interrupted", file=sys.stderr)
        return 130


def _warnings_above_progress_bars():
    """Route the console log handler through tqdm, so that a warning prints above a running
    progress bar instead of through it (only when logging prints to the console at all)."""
    import contextlib

    from tqdm.contrib.logging import logging_redirect_tqdm

    console = (sys.stdout, sys.stderr)
    handlers = logging.getLogger().handlers
    if any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in console for h in handlers):
        return logging_redirect_tqdm()
    return contextlib.nullcontext()


def _exit_now(signum, frame) -> None:  # pragma: no cover - runs in a process being interrupted
    os.write(2, b"fluxmem: interrupted\n")
    os._exit(130)


def _import_torch_guarded() -> None:
    """Import torch with Ctrl-C ending the process at once: an interrupt that lands inside torch's
    C++ start-up cannot be caught as KeyboardInterrupt (it aborts the interpreter). Nothing has
    been written yet at that point, so exiting is clean."""
    try:
        previous = signal.signal(signal.SIGINT, _exit_now)
    except ValueError:  # not the main thread (main() called from a thread): nothing to guard
        import torch  # noqa: F401
        return
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage mistake already printed
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _import_torch_guarded()
    try:
        with _warnings_above_progress_bars():
            return int(args.handler(args) or 0)
    except FluxMemError as error:
        print(f"fluxmem {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fluxmem {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
