"""``fluxmem compare RUN_DIR``: the table and the plot of a comparison of memory methods again,
from its files alone (no model).

RUN_DIR is the --out folder of ``fluxmem eval BENCHMARK ... --memory a,b,c``: one run folder per
method and run.json. Prints the table (per task and overall, per method: score with its bootstrap
interval over queries, visual tokens kept, memory time, time per query) and rewrites
RUN_DIR/compare.md, compare.json and compare.png (score against tokens kept; needs matplotlib,
pip install "fluxmem-video[viz]").
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="table and plot of a comparison of memory methods (eval --memory a,b,c)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of fluxmem eval ... --memory a,b,c")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resamples (default %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="write no compare.png")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.compare import comparison_of_run, write_comparison

    comparison = comparison_of_run(args.run_dir, resamples=args.resamples, seed=args.seed)
    write_comparison(args.run_dir, comparison)
    show(args.run_dir, comparison, plot=not args.no_plot)
    return 0


def show(out, comparison, *, plot: bool = True) -> None:
    """Print the comparison's table and write its plot (when matplotlib is installed: one line
    saying so otherwise)."""
    import importlib.util
    import sys
    from pathlib import Path

    from ..eval.compare import COMPARE_PLOT

    print(comparison.to_markdown())
    written = ["compare.md", "compare.json"]
    if plot:
        if importlib.util.find_spec("matplotlib") is None:
            print('fluxmem: no plot: matplotlib is not installed (pip install "fluxmem-video[viz]").', file=sys.stderr)
        else:
            import matplotlib.pyplot as plt

            from ..viz.compare import plot_comparison

            budget = f" at budget {comparison.budget}" if comparison.budget else ""
            figure = plot_comparison(comparison.plot_points(), Path(out) / COMPARE_PLOT,
                                     title=f"{comparison.title}: memory methods{budget}")
            plt.close(figure)
            written.append(COMPARE_PLOT)
    print(f"results in {out}: {', '.join(written)}, one run folder per method")
