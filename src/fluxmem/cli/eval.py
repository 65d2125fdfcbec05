"""fluxmem eval BENCHMARK: run a benchmark under a named protocol, resumably, and print its
score table; or, with --dry-run, write what every query would be given, without a model.

Protocols (--protocol, default fluxmem): published reproduces the published FluxMem
evaluation query by query and fixes every setting; official follows the benchmark's own code;
fluxmem is FluxMem's setting with the published errors corrected. The protocol's name and
every resolved setting go into OUT/run.json. Each answer is appended to OUT/answers.jsonl as soon
as it exists; rerunning the same command resumes. Under torchrun/accelerate launch the
questions are sharded across processes and rank 0 merges and scores. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError, InputError
from . import options

log = logging.getLogger("fluxmem.eval")


def register(subparsers) -> None:
    from ..eval.benchmark import benchmark_names, get_benchmark

    parser = subparsers.add_parser("eval", help="run a streaming benchmark (StreamingBench, OVO-Bench)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name in benchmark_names():
        bench = get_benchmark(name)
        sub = benchmarks.add_parser(name, help=bench.help, description=f"{bench.help}.\n\n{__doc__.split(chr(10), 2)[2]}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_arguments(sub)
        sub.set_defaults(handler=run, benchmark=name)
    parser.set_defaults(handler=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.protocol import DEFAULT_PROTOCOL, PROTOCOLS

    data = parser.add_argument_group("data")
    data.add_argument("--annotations", required=True,
                      help="annotation file or directory (StreamingBench JSON/CSV; OVO-Bench JSON)")
    data.add_argument("--videos", required=True,
                      help="directory the annotations' video paths are relative to (OVO-Bench under "
                           "--protocol published: the folder holding chunked_videos/)")
    data.add_argument("--video-prefix", default="", help="folder prepended to every video path")
    data.add_argument("--out", required=True, help="results directory (rerun with the same one to resume)")
    data.add_argument("--tasks", nargs="+", default=None,
                      help="tasks or categories to run (names or abbreviations, space or comma separated)")
    data.add_argument("--limit", type=options.positive_int, default=None, help="at most N questions, balanced across tasks")
    proto = parser.add_argument_group("protocol (every setting below defaults to the protocol's own value)")
    proto.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                       help=f"published | official | fluxmem (default {DEFAULT_PROTOCOL}); see docs/evaluation.md")
    proto.add_argument("--dry-run", action="store_true",
                       help="load no model: write OUT/queries.jsonl (prompt, window, frame times, spacing, pixels "
                            "of every query) from the videos' metadata alone")
    proto.add_argument("--context", type=options.seconds, default=None,
                       help="seconds of video before each question (0 = all of the past)")
    proto.add_argument("--fps", type=options.positive_float, default=None, help="frames per second")
    proto.add_argument("--max-frames", type=options.positive_int, default=None, help="frames per query at most")
    proto.add_argument("--min-pixels", type=options.pixel_budget, default=None, help="pixels per frame at least")
    proto.add_argument("--max-pixels", type=options.pixel_budget, default=None, help="pixels per frame at most")
    proto.add_argument("--max-new-tokens", type=options.positive_int, default=None, help="reply length")
    proto.add_argument("--repetition-penalty", type=float, default=None,
                       help="generation's repetition penalty (the checkpoint's own 1.05 by default)")
    proto.add_argument("--past-end", choices=("clamp", "skip"), default=None,
                       help="questions asked after the end of their video: clamp to the end, or skip")
    options.add_model_options(parser)
    for action in parser._actions:
        if action.dest == "model":
            action.required = False  # the dry run needs none
            action.default = ""
            action.type = None  # an empty --model is "no model" here, refused unless --dry-run
    options.add_memory_options(parser, several=True)
    run = parser.add_argument_group("run")
    run.add_argument("--merge-timeout", type=float, default=6 * 3600,
                     help="seconds rank 0 waits for the other processes' answers (default 6 h)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals of a comparison (default 0)")


def _tasks(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def methods_from_args(args: argparse.Namespace) -> list[str] | None:
    """The memory methods of ``--memory`` (``None`` when not given)."""
    from ..eval.runner import split_methods

    return None if args.memory is None else split_methods(args.memory)


def settings_from_args(args: argparse.Namespace):
    """The run's settings (with several methods: the settings every method's run shares)."""
    from ..eval.runner import RunSettings

    methods = methods_from_args(args)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a directory (created if missing).")
    if not args.dry_run and not args.model:
        raise ConfigError("--model is required (it may be omitted only with --dry-run).")
    return RunSettings(
        benchmark=args.benchmark,
        annotations=args.annotations,
        videos=args.videos,
        out=args.out,
        model=args.model,
        use_fluxmem=not args.no_fluxmem,
        memory=options.memory_config(args),
        method=methods[0] if methods and len(methods) == 1 else None,
        budget=args.budget,
        protocol=args.protocol,
        context=args.context,
        fps=args.fps,
        max_frames=args.max_frames,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
        past_end=args.past_end,
        repetition_penalty=args.repetition_penalty,
        tasks=_tasks(args.tasks),
        limit=args.limit,
        video_prefix=args.video_prefix,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        positions=args.positions,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    methods = methods_from_args(args)
    if methods is not None:
        options.check_fluxmem_flags_used(args, methods)
    if methods is not None and len(methods) > 1:
        for method in methods:
            settings.for_method(method, settings.out)  # every method and its options checked before any work
    if args.dry_run:
        return _dry_run(settings)
    if methods is not None and len(methods) > 1:
        return _compare(settings, methods, args)
    from ..eval.runner import run_benchmark

    result = run_benchmark(settings, progress=not args.no_progress, merge_timeout=args.merge_timeout)
    if result.table is None:  # another rank than 0 (it does not score), or rank 0 gave up waiting
        return 0 if result.rank != 0 else 1
    print(result.table.to_markdown())
    print(f"results in {result.out}: scores.json, scores.md, answers.jsonl, run.json")
    return 0


def _dry_run(settings) -> int:
    from ..eval.common import DataIssues
    from ..eval.dryrun import dry_run
    from ..eval.runner import claim_run_dir, load_items

    with claim_run_dir(settings):  # the annotations and videos are inputs: never written over
        issues = DataIssues()
        items = load_items(settings, issues)
        record = settings.record()
        result = dry_run(settings.bench, settings.protocol, items, settings.videos, settings.out,
                         loader_issues=issues, settings=record)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.issues.items())) or "none"
    print(f"{settings.benchmark} --protocol {settings.protocol.name}: {result.queries} queries "
          f"({result.skipped} skipped: {skipped}) in {result.seconds:.1f} s -> {result.path}")
    return 0


def _compare(settings, methods: list[str], args: argparse.Namespace) -> int:
    from ..eval.runner import run_comparison
    from .compare import show

    result = run_comparison(settings, methods, progress=not args.no_progress, merge_timeout=args.merge_timeout,
                            seed=args.seed)
    if result.comparison is None:  # another rank than 0, or rank 0 gave up waiting
        return 0 if result.runs[0].rank != 0 else 1
    show(result.out, result.comparison)
    return 0
