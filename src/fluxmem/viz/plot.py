"""Tokens kept per grid step over time, by tier, with the overall retained fraction."""

from __future__ import annotations

from pathlib import Path

from .records import TIERS, MemoryTrace

# fill, hatch colour, hatch: told apart by brightness and pattern, not by hue
TIER_STYLE = {
    "short": {"facecolor": "white", "edgecolor": "black", "hatch": ""},
    "mid": {"facecolor": "0.72", "edgecolor": "black", "hatch": "///"},
    "long": {"facecolor": "0.25", "edgecolor": "white", "hatch": ".."},
}
TIER_NAMES = {"short": "short-term (whole)", "mid": "mid-term (after TAS)", "long": "long-term (after TAS + SDC)"}


def plot_tokens(trace: MemoryTrace, path=None, *, dpi: int = 110):
    """Draw the plot (and save it as PNG when ``path`` is given).

    Returns ``(figure, numbers)``; ``numbers`` is read back from the drawn bars (time, kept tokens and
    tier of every step) plus the totals in the title, so a caller can check the picture against
    the memory's statistics.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    steps = trace.steps
    figure = Figure(figsize=(9.0, 4.2), dpi=dpi, layout="constrained")
    axes = figure.add_subplot()
    span = [max(step.end_s - step.start_s, 0.0) for step in steps]
    if len(steps) > 1:
        pitch = min(b.start_s - a.start_s for a, b in zip(steps, steps[1:]) if b.start_s > a.start_s) if any(
            b.start_s > a.start_s for a, b in zip(steps, steps[1:])
        ) else 1.0
    else:
        pitch = max(span[0] if span else 0.0, 1.0)
    width = 0.8 * pitch
    counts = trace.tier_counts()
    bars_by_tier = {}
    for tier in TIERS:
        chosen = [step for step in steps if step.tier == tier]
        if not chosen:
            continue
        style = TIER_STYLE[tier]
        entry = counts[tier]
        bars = axes.bar(
            [step.start_s + width / 2 for step in chosen],
            [step.kept_tokens for step in chosen],
            width=width,
            facecolor=style["facecolor"],
            edgecolor=style["edgecolor"],
            hatch=style["hatch"],
            linewidth=0.6,
            label=f"{TIER_NAMES[tier]}: {entry['frames']} steps, {entry['kept']}/{entry['tokens']} kept",
            zorder=2,
        )
        for patch in bars:  # a black outline on every bar, whatever its hatch colour
            patch.set_path_effects([])
        axes.bar(
            [step.start_s + width / 2 for step in chosen],
            [step.kept_tokens for step in chosen],
            width=width,
            fill=False,
            edgecolor="black",
            linewidth=0.8,
            zorder=3,
        )
        bars_by_tier[tier] = (chosen, bars)
    per_step = trace.grid_thw[1] * trace.grid_thw[2]
    axes.axhline(per_step, color="black", linestyle="--", linewidth=1.2, zorder=1)
    axes.annotate(
        f"tokens per step before pruning: {per_step}",
        xy=(0.0, per_step),
        xycoords=("axes fraction", "data"),
        xytext=(4, 4),
        textcoords="offset points",
        fontsize=9,
        va="bottom",
    )
    axes.set_ylim(0, per_step * 1.18)
    if steps:
        axes.set_xlim(steps[0].start_s - 0.2 * pitch, steps[-1].start_s + width + 0.2 * pitch)
    axes.set_xlabel("video time (s), one bar per temporal grid step")
    axes.set_ylabel("visual tokens kept")
    axes.grid(axis="y", color="0.85", zorder=0)
    axes.set_axisbelow(True)
    title = (
        f"kept {trace.kept_tokens} of {trace.tokens} visual tokens "
        f"(retained fraction {100 * trace.retained_fraction:.1f}%)"
    )
    axes.set_title(title, fontsize=11)
    handles = [
        Patch(facecolor=TIER_STYLE[t]["facecolor"], edgecolor=TIER_STYLE[t]["edgecolor"], hatch=TIER_STYLE[t]["hatch"],
              label=bars.get_label(), linewidth=0.6)
        for t, (chosen, bars) in bars_by_tier.items()
    ]
    # a black frame around legend keys whose hatch is white
    for handle in handles:
        handle.set_edgecolor("black") if handle.get_facecolor()[0] > 0.5 else None
    figure.legend(handles=handles, loc="outside lower center", ncols=min(3, max(1, len(handles))), fontsize=9, frameon=False)

    numbers = {"time_s": [], "kept": [], "tier": []}
    for tier, (chosen, bars) in bars_by_tier.items():
        for step, patch in zip(chosen, bars.patches):
            numbers["time_s"].append(step.start_s)
            numbers["kept"].append(int(round(patch.get_height())))
            numbers["tier"].append(tier)
    order = sorted(range(len(numbers["time_s"])), key=lambda i: numbers["time_s"][i])
    numbers = {key: [values[i] for i in order] for key, values in numbers.items()}
    numbers.update(tokens_per_step=per_step, tokens=trace.tokens, kept_total=trace.kept_tokens,
                   retained_fraction=trace.retained_fraction, title=title)
    if path is not None:
        figure.savefig(Path(path), dpi=dpi)
    return figure, numbers
