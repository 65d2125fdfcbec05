"""Tokens kept per grid step over time, by tier, with the overall retained fraction."""

from __future__ import annotations

from ..outputs import atomic_file
from .records import TIERS, MemoryTrace

# fill, hatch colour, hatch: told apart by brightness and pattern, not by hue
TIER_STYLE = {
    "short": {"facecolor": "white", "hatchcolor": "black", "hatch": ""},
    "mid": {"facecolor": "0.72", "hatchcolor": "black", "hatch": "///"},
    "long": {"facecolor": "0.22", "hatchcolor": "white", "hatch": ".."},
}
TIER_NAMES = {"short": "short-term (whole)", "mid": "mid-term (after TAS)", "long": "long-term (after TAS + SDC)"}


def _style(tier: str) -> dict:
    """Patch keywords: black outline, hatch in its own colour where matplotlib allows (>= 3.10)."""
    from matplotlib.patches import Patch

    style = TIER_STYLE[tier]
    kwargs = {"facecolor": style["facecolor"], "hatch": style["hatch"], "linewidth": 0.8}
    if hasattr(Patch, "set_hatchcolor"):
        kwargs.update(edgecolor="black", hatchcolor=style["hatchcolor"])
    else:  # pragma: no cover - older matplotlib draws the hatch in the edge colour
        kwargs.update(edgecolor=style["hatchcolor"])
    return kwargs


def _pitch(trace: MemoryTrace) -> float:
    """Seconds between consecutive grid steps (1 when it cannot be told)."""
    gaps = [b.start_s - a.start_s for a, b in zip(trace.steps, trace.steps[1:]) if b.start_s > a.start_s]
    return min(gaps) if gaps else 1.0


def plot_tokens(trace: MemoryTrace, path=None, *, dpi: int = 110):
    """Draw the plot (and save it as PNG when ``path`` is given).

    Returns ``(figure, numbers)``: ``numbers`` is read back from the drawn bars (time, kept tokens and
    tier of every step) plus the totals in the title, so a caller can check the picture against the
    memory's own statistics.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    steps = trace.steps
    figure = Figure(figsize=(9.0, 4.6), dpi=dpi, layout="constrained")
    axes = figure.add_subplot()
    pitch = _pitch(trace)
    width = 0.8 * pitch
    counts = trace.tier_counts()
    drawn, handles = [], []
    for tier in TIERS:
        chosen = [step for step in steps if step.tier == tier]
        if not chosen:
            continue
        entry = counts[tier]
        label = f"{TIER_NAMES[tier]}: {entry['frames']} steps, {entry['kept']}/{entry['tokens']} kept"
        bars = axes.bar(
            [step.start_s for step in chosen],
            [step.kept_tokens for step in chosen],
            width=width,
            align="edge",
            zorder=2,
            **_style(tier),
        )
        drawn.extend((step, patch, tier) for step, patch in zip(chosen, bars.patches))
        handles.append(Patch(label=label, **_style(tier)))
    per_step = trace.grid_thw[1] * trace.grid_thw[2]
    axes.axhline(per_step, color="black", linestyle="--", linewidth=1.2, zorder=1)
    axes.annotate(
        f"tokens per step before pruning: {per_step}",
        xy=(0.0, per_step),
        xycoords=("axes fraction", "data"),
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=9,
        va="bottom",
    )
    axes.set_ylim(0, per_step * 1.15)
    if steps:
        axes.set_xlim(steps[0].start_s - 0.4 * pitch, steps[-1].start_s + width + 0.4 * pitch)
    axes.set_xlabel("video time (s); one bar per temporal grid step, starting at its first frame")
    axes.set_ylabel("visual tokens kept")
    axes.grid(axis="y", color="0.85", zorder=0)
    axes.set_axisbelow(True)
    title = f"kept {trace.kept_tokens} of {trace.tokens} visual tokens (retained fraction {100 * trace.retained_fraction:.1f}%)"
    axes.set_title(title, fontsize=11)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(2, max(1, len(handles))), fontsize=9, frameon=False)

    drawn.sort(key=lambda item: item[1].get_x())
    numbers = {
        "time_s": [round(patch.get_x(), 6) for _, patch, _ in drawn],
        "kept": [int(round(patch.get_height())) for _, patch, _ in drawn],
        "tier": [tier for _, _, tier in drawn],
        "tokens_per_step": per_step,
        "tokens": trace.tokens,
        "kept_total": trace.kept_tokens,
        "retained_fraction": trace.retained_fraction,
        "title": title,
    }
    if path is not None:
        with atomic_file(path) as temporary:
            figure.savefig(temporary, dpi=dpi)
    return figure, numbers
