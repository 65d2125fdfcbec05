"""Score against visual tokens kept: one point per memory method, with its bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot_comparison(points: Sequence[dict[str, Any]], path=None, *, title: str = "", dpi: int = 120):
    """Draw ``points`` (``method``, ``tokens``, ``score``, ``low``, ``high`` each, as
    :meth:`fluxmem.eval.compare.Comparison.plot_points` gives them) and save a PNG at ``path``.
    Methods without a score are listed under the plot instead. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    drawn = [p for p in points if p.get("score") is not None and p.get("tokens") is not None]
    missing = [p["method"] for p in points if p not in drawn]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=dpi)
    for k, point in enumerate(drawn):
        low = point["low"] if point.get("low") is not None else point["score"]
        high = point["high"] if point.get("high") is not None else point["score"]
        ax.errorbar(point["tokens"], point["score"], yerr=[[point["score"] - low], [high - point["score"]]],
                    fmt=MARKERS[k % len(MARKERS)], color="black", markerfacecolor="white" if k % 2 else "black",
                    markersize=7, capsize=4, linewidth=1, label=point["method"])
    groups: dict[tuple[float, float], list[str]] = {}  # methods on the same spot share one label
    for point in drawn:
        groups.setdefault((round(point["tokens"], 3), round(point["score"], 3)), []).append(point["method"])
    for (x, y), names in groups.items():
        ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(8, 4), fontsize=8, va="bottom")
    ax.set_xlabel("visual tokens kept per query (mean)")
    ax.set_ylabel("score (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title, fontsize=10)
    ax.grid(True, linewidth=0.4, color="0.8")
    if drawn:
        ax.legend(fontsize=8, loc="best", frameon=False)
        xs = [p["tokens"] for p in drawn]
        span = max(xs) - min(xs) or max(1.0, abs(xs[0]) * 0.1)
        ax.set_xlim(min(xs) - 0.15 * span, max(xs) + 0.35 * span)
    if missing:
        fig.text(0.01, 0.01, "no score: " + ", ".join(missing), fontsize=8)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
    return fig
