"""``summary.json``: the numbers behind the pictures."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import write_text
from .records import MemoryTrace


def write_summary(trace: MemoryTrace, path, *, files: dict | None = None, plot: dict | None = None) -> Path:
    """Write the trace's statistics (per step and per tier), the files written and the plotted
    series; every count comes from the memory's records."""
    data = trace.summary()
    if plot is not None:
        data["plot"] = {key: value for key, value in plot.items() if key != "title"}
    if files:
        data["files"] = {key: str(value) for key, value in files.items()}
    path = Path(path)
    write_text(path, json.dumps(data, indent=2) + "\n")
    return path
