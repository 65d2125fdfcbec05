"""``fluxmem score``: score tables from answers, without running a model.

  fluxmem score DIR
      recompute the tables of a ``fluxmem eval`` run from its answers file(s) alone
      (per-rank parts included), rewriting DIR/scores.json and DIR/scores.md.
  fluxmem score ovobench --annotations ovo_bench_new.json --replies FILE.jsonl --out DIR
      score replies produced elsewhere: one JSON line per question,
      {"id": ID, "response": "..."} or, for a forward probe, {"id": ID, "probe": K, "response": "..."}.
  fluxmem score streamingbench --annotations questions_real.json --field NAME --out DIR
      score replies stored the benchmark's own way: a field NAME in each question holding the
      reply (for proactive items, the dialog history).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError, InputError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="score a run directory, or replies produced elsewhere", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="fluxmem score DIR | {ovobench,streamingbench} --annotations PATH (--replies FILE | --field NAME) --out DIR",
    )
    parser.add_argument("target", help="a run directory, or 'ovobench' / 'streamingbench'")
    parser.add_argument("--annotations", help="benchmark annotations (replies scoring)")
    parser.add_argument("--replies", help="OVO-Bench replies, JSON lines")
    parser.add_argument("--field", help="StreamingBench: the field holding the model's replies")
    parser.add_argument("--out", help="where to write scores.json and scores.md (replies scoring)")
    parser.add_argument("--context", type=options.seconds, default=60.0,
                        help="StreamingBench context recorded with the scores (default 60; 0 = all)")
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks or categories to score")
    parser.add_argument("--json", action="store_true", help="print scores.json instead of the table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.benchmark import benchmark_names
    from ..eval.runner import score_replies, score_run

    target = Path(args.target)
    tasks = None
    if args.tasks:
        tasks = tuple(t.strip() for v in args.tasks for t in v.split(",") if t.strip())
    if args.target in benchmark_names() and not target.is_dir():
        if not args.annotations or not args.out:
            raise ConfigError(f"fluxmem score {args.target} needs --annotations PATH and --out DIR.")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"--out {args.out} is a file; pass a directory (created if missing).")
        context = args.context if args.context > 0 else None
        scores, table = score_replies(args.target, args.annotations, args.out, replies=args.replies,
                                      field_name=args.field, context=context, tasks=tasks)
        out = Path(args.out)
    else:
        if not target.is_dir():
            raise InputError(
                f"{target} is not a directory; pass the --out directory of a fluxmem eval run, or "
                "'ovobench'/'streamingbench' to score replies."
            )
        for name in ("annotations", "replies", "field", "out"):
            if getattr(args, name):
                raise ConfigError(f"--{name} is for scoring replies; 'fluxmem score DIR' reads DIR alone.")
        if tasks:
            raise ConfigError("--tasks is for scoring replies; 'fluxmem score DIR' scores the run as it was.")
        scores, table = score_run(target)
        out = target
    torn = (scores.get("data") or {}).get("answers_file") or {}
    if torn:
        import sys

        counts = ", ".join(f"{k} {v}" for k, v in sorted(torn.items()))
        print(f"warning: answers files hold {counts}: torn lines passed over, the first record per question "
              "kept (counted in scores.json data.answers_file)", file=sys.stderr)
    if args.json:
        print(json.dumps(scores, indent=2, ensure_ascii=False))
    else:
        print(table.to_markdown())
        print(f"written: {out / 'scores.json'}, {out / 'scores.md'}")
    return 0
