"""``fluxmem eval streamingbench|ovobench``: run a benchmark, resumably, and print its score table.

Each answer is appended to OUT/answers.jsonl as soon as it exists; rerunning the same command
resumes. Under ``torchrun``/``accelerate launch`` the questions are sharded across processes and
rank 0 merges and scores. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse

from . import options

_DEFAULT_CONTEXT = {"streamingbench": 60.0, "ovobench": None}

_HELP = {
    "streamingbench": "StreamingBench (JSON or CSV annotations; real-time clips of --context seconds)",
    "ovobench": "OVO-Bench v2 (ovo_bench_new.json; each query sees [0, ceil(realtime)])",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="run StreamingBench or OVO-Bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name in ("streamingbench", "ovobench"):
        sub = benchmarks.add_parser(name, help=_HELP[name], description=f"{_HELP[name]}.\n\n{__doc__.split(chr(10), 2)[2]}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_arguments(sub, name)
        sub.set_defaults(handler=run, benchmark=name)
    parser.set_defaults(handler=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_arguments(parser: argparse.ArgumentParser, benchmark: str) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--annotations", required=True,
                      help="annotation file or directory (StreamingBench JSON/CSV; OVO-Bench JSON)")
    data.add_argument("--videos", required=True, help="directory the annotations' video paths are relative to")
    data.add_argument("--video-prefix", default="", help="folder prepended to every video path")
    data.add_argument("--out", required=True, help="results directory (rerun with the same one to resume)")
    data.add_argument("--tasks", nargs="+", default=None,
                      help="tasks or categories to run (names or abbreviations, space or comma separated)")
    data.add_argument("--limit", type=int, default=None, help="at most N questions, balanced across tasks")
    data.add_argument("--past-end", choices=("clamp", "skip"), default="clamp",
                      help="questions asked after the end of their video: clamp to the end (default) or skip")
    options.add_model_options(parser)
    options.add_memory_options(parser)
    options.add_sampling_options(parser)
    sampling = [g for g in parser._action_groups if g.title == "frame sampling"][0]
    default = _DEFAULT_CONTEXT[benchmark]
    sampling.add_argument(
        "--context", type=float, default=default,
        help=("seconds of video before each question that the model may see "
              + ("(default 60, the leaderboard's setting; 0 = all of it)" if default else
                 "(default: all of [0, ceil(realtime)])")),
    )
    run = parser.add_argument_group("run")
    run.add_argument("--max-new-tokens", type=int, default=64)
    run.add_argument("--merge-timeout", type=float, default=6 * 3600,
                     help="seconds rank 0 waits for the other processes' answers (default 6 h)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _tasks(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def settings_from_args(args: argparse.Namespace):
    from ..eval.runner import RunSettings

    context = args.context if args.context and args.context > 0 else None
    return RunSettings(
        benchmark=args.benchmark,
        annotations=args.annotations,
        videos=args.videos,
        out=args.out,
        model=args.model,
        use_fluxmem=not args.no_fluxmem,
        memory=options.memory_config(args),
        sampling=options.sampling_options(args),
        context=context,
        tasks=_tasks(args.tasks),
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        past_end=args.past_end,
        video_prefix=args.video_prefix,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
    )


def run(args: argparse.Namespace) -> int:
    from ..eval.runner import run_benchmark

    settings = settings_from_args(args)
    result = run_benchmark(settings, progress=not args.no_progress, merge_timeout=args.merge_timeout)
    if result.table is None:  # another rank than 0 (it does not score), or rank 0 gave up waiting
        return 0 if result.rank != 0 else 1
    print(result.table.to_markdown())
    print(f"results in {result.out}: scores.json, scores.md, answers.jsonl, run.json")
    return 0
