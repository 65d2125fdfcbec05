"""Plan every query of a benchmark under a protocol, without a model: the dry run.

``fluxmem eval BENCH --protocol P --dry-run --out DIR`` writes ``DIR/queries.jsonl``, one JSON line
per query (skipped ones included) with what the model would be given: the prompt exactly as it
goes into the chat template, the window, the time of every frame, the spacing reported to the
model, the pixel limits, and the data issue when the query cannot run. It reads only the videos'
metadata (frame count, declared rate, container duration), so a whole benchmark takes seconds; no
model, processor or tokenizer is loaded. The runner plans each call with the same
:func:`plan_query`, so what the dry run shows is what a run feeds the model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VideoError
from ..outputs import claim_output, write_text
from .benchmark import Benchmark, QueryPlan, Turn
from .common import DataIssues, EvalItem
from .protocol import (
    FramePlan,
    Protocol,
    VideoMeta,
    published_max_pixels,
    read_video_meta,
)

QUERIES_FILE = "queries.jsonl"
DRY_RUN_FILE = "dry_run.json"


class VideoMetaCache:
    """Reads each video's metadata once: a :class:`~fluxmem.eval.protocol.VideoMeta`, or
    ``(reason, detail)`` when the file is missing or unreadable."""

    def __init__(self) -> None:
        self._cache: dict[Path, Any] = {}

    def get(self, path: Path) -> VideoMeta | tuple[str, str]:
        if path not in self._cache:
            if not path.exists():
                self._cache[path] = ("missing_video", f"{path} does not exist")
            else:
                try:
                    self._cache[path] = read_video_meta(path)
                except VideoError as error:
                    self._cache[path] = ("unreadable_video", str(error).splitlines()[0][:300])
        return self._cache[path]


def pixel_limits(protocol: Protocol, frames: FramePlan) -> tuple[int | None, int | None]:
    """``(min_pixels, max_pixels)`` per frame as the frames will be sized: the protocol's
    ``max_pixels`` lowered by the total budget when the frame count is large (qwen-vl-utils)."""
    if not frames.indices or protocol.max_pixels is None:
        return protocol.min_pixels, protocol.max_pixels
    return protocol.min_pixels, published_max_pixels(len(frames.indices), protocol.max_pixels,
                                                      protocol.min_pixels or 0)


def plan_turn(bench: Benchmark, protocol: Protocol, item: EvalItem, path: Path, meta: VideoMeta,
              turn: Turn) -> QueryPlan:
    """The frames and pixel limits of one call."""
    frames = bench.frames(item, protocol, meta, turn)
    lo, hi = pixel_limits(protocol, frames)
    return QueryPlan(path, turn, frames, lo, hi)


@dataclass
class Planned:
    """A query once its video is known: the fitted item and the plan of its first call, or the
    skip ``reason`` and ``detail``; ``warnings``: what fitting it noted (e.g. past_end_clamped)."""

    item: EvalItem
    path: Path
    meta: VideoMeta | None = None
    plan: QueryPlan | None = None
    reason: str | None = None
    detail: str = ""
    warnings: list[str] = field(default_factory=list)
    issues: DataIssues = field(default_factory=lambda: DataIssues(log_limit=0))


def plan_query(bench: Benchmark, protocol: Protocol, item: EvalItem, videos: Path,
               metas: VideoMetaCache) -> Planned:
    """Where the query's video is, how its window fits the video, and its first call's frames."""
    path = bench.video_path(item, Path(videos), protocol)
    info = metas.get(path)
    if not isinstance(info, VideoMeta):
        return Planned(item, path, reason=info[0], detail=f"{item.uid}: {info[1]}")
    out = Planned(item, path, meta=info)
    fitted = bench.fit(item, protocol, info, out.issues)
    out.warnings = sorted(out.issues.counts)
    if fitted is None:
        out.reason = next(iter(out.issues.skipped))
        out.detail = (out.issues.examples.get(out.reason) or [item.uid])[0]
        return out
    out.item = fitted
    out.plan = plan_turn(bench, protocol, fitted, path, info, bench.first_turn(fitted))
    if out.plan.frames.issue:
        out.reason, out.detail = "window_without_frames", f"{item.uid}: {out.plan.frames.issue}"
    return out


def query_line(planned: Planned, protocol: Protocol) -> dict[str, Any]:
    """The dry run's line of one query."""
    item = planned.item
    turn = planned.plan.turn if planned.plan else Turn(item.clip_start, item.clip_end, item.prompt)
    frames = planned.plan.frames if planned.plan else None
    issue = None
    if planned.reason:
        issue = f"{planned.reason}: {planned.detail}"
    window = list(frames.window) if frames else [turn.start, turn.end]
    lo, hi = (planned.plan.min_pixels, planned.plan.max_pixels) if planned.plan else (protocol.min_pixels,
                                                                                     protocol.max_pixels)
    ok = frames is not None and not frames.issue
    return {
        "id": item.uid,
        "task": item.task,
        "video": str(planned.path),
        "time": item.query_time,
        "prompt": turn.prompt,
        "window": window,
        "frame_times": list(frames.times) if ok else [],
        "frame_indices": list(frames.indices) if ok else [],
        "second_per_grid_ts": frames.second_per_grid_ts if ok else None,
        "min_pixels": lo,
        "max_pixels": hi,
        "issue": issue,
        "warnings": planned.warnings,
    }


@dataclass
class DryRunResult:
    path: Path
    queries: int
    skipped: int
    seconds: float
    issues: dict[str, int]


def dry_run(bench: Benchmark, protocol: Protocol, items: Sequence[EvalItem], videos: str | os.PathLike,
            out: str | os.PathLike, *, loader_issues: DataIssues | None = None,
            settings: dict[str, Any] | None = None) -> DryRunResult:
    """Write ``out/queries.jsonl`` (one line per query) and ``out/dry_run.json`` (the protocol,
    every resolved setting, the counts)."""
    started = time.perf_counter()
    with claim_output(out, flag="--out", kind="dir", writes=(QUERIES_FILE, DRY_RUN_FILE), what="queries",
                      folders={"video folder": videos}) as folder:
        return _dry_run(bench, protocol, items, videos, folder, started, loader_issues, settings)


def _dry_run(bench, protocol, items, videos, out: Path, started: float, loader_issues, settings) -> DryRunResult:
    metas = VideoMetaCache()
    reasons: dict[str, int] = {}
    lines = []
    for item in items:
        planned = plan_query(bench, protocol, item, Path(videos), metas)
        if planned.reason:
            reasons[planned.reason] = reasons.get(planned.reason, 0) + 1
        lines.append(json.dumps(query_line(planned, protocol), ensure_ascii=False) + "\n")
    path = write_text(out / QUERIES_FILE, "".join(lines))
    seconds = time.perf_counter() - started
    summary = {
        "benchmark": bench.name,
        "protocol": protocol.name,
        "protocol_settings": protocol.record(),
        "settings": settings or {},
        "queries": len(lines),
        "skipped": dict(sorted(reasons.items())),
        "data_issues": (loader_issues or DataIssues()).to_dict(),
        "seconds": round(seconds, 3),
    }
    write_text(out / DRY_RUN_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return DryRunResult(path, len(lines), sum(reasons.values()), seconds, reasons)
