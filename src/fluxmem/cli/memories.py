"""``fluxmem memories``: the memory methods, one line each."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "memories",
        help="list the memory methods (--memory NAME) with one line each",
        description="The memory methods --memory takes (a name, NAME:VALUE or NAME:key=value,...), "
        "and --budget: a count (1200), a fraction (0.35) or match:METHOD.",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..memories import describe

    rows = describe()
    width = max(len(name) for name, _ in rows)
    for name, line in rows:
        print(f"{name:<{width}}  {line}")
    return 0
