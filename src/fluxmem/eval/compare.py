"""Memory methods side by side: one table and the numbers of one plot, from a comparison's files.

A comparison (``fluxmem eval ... --memory a,b,c``, :func:`~fluxmem.eval.runner.run_comparison`)
is a folder holding ``run.json`` (the methods asked, their folders, the budget) and one complete
run directory per method. :func:`comparison_of_run` reads them (nothing else: ``fluxmem compare``
renders the same table again) and gives, per task and overall and per method: the benchmark's
score (official column), its bootstrap interval over queries, the visual tokens kept per query
(and the budget asked), the memory's time and the time per query.

The intervals resample the run's questions with replacement (the same resamples for every
method, seeded) and score each resample with the benchmark's own scoring, so they cover what
the table shows, OVO-Bench's mean of categories included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from .benchmark import get_benchmark
from .common import DataIssues, EvalItem, Tally
from .protocol import protocol_from_record

COMPARE_MD = "compare.md"
COMPARE_JSON = "compare.json"
COMPARE_PLOT = "compare.png"
CONFIDENCE = 0.95


@dataclass
class MethodRow:
    """One method on one task (``task`` ``None``: overall)."""

    method: str
    task: str | None
    queries: int
    score: float | None
    low: float | None = None
    high: float | None = None
    kept_tokens: float | None = None
    """Visual tokens kept per answered query (mean)."""
    visual_tokens: float | None = None
    budget_tokens: float | None = None
    memory_ms: float | None = None
    seconds_per_query: float | None = None


@dataclass
class Comparison:
    benchmark: str
    title: str
    budget: str | None
    methods: list[str]
    tasks: list[str]
    rows: list[MethodRow] = field(default_factory=list)
    resamples: int = 0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def overall(self) -> list[MethodRow]:
        return [row for row in self.rows if row.task is None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "title": self.title,
            "budget": self.budget,
            "methods": self.methods,
            "tasks": self.tasks,
            "confidence": CONFIDENCE,
            "resamples": self.resamples,
            "seed": self.seed,
            "rows": [row.__dict__ for row in self.rows],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """One table: per task, then overall, one row per method."""

        def num(value, digits=1):
            return "–" if value is None else f"{value:.{digits}f}"

        budget = f" at budget {self.budget}" if self.budget else ""
        head = ["Task", "Method", "n", "Score", f"{round(100 * CONFIDENCE)}% CI", "Tokens kept"]
        if self.budget:
            head.append("Budget")
        head += ["Memory ms", "s / query"]
        out = [f"### {self.title}: memory methods{budget}", "", "| " + " | ".join(head) + " |",
               "|---|---|" + "---:|" * (len(head) - 2)]
        for row in self.rows:
            kept = num(row.kept_tokens, 0)
            if row.kept_tokens is not None and row.visual_tokens:
                kept += f" ({100 * row.kept_tokens / row.visual_tokens:.0f}%)"
            ci = "–" if row.low is None else f"{row.low:.1f}–{row.high:.1f}"
            cells = [row.task or "**Overall**", row.method if row.task else f"**{row.method}**", str(row.queries),
                     num(row.score, 2), ci, kept]
            if self.budget:
                cells.append(num(row.budget_tokens, 0))
            cells += [num(row.memory_ms, 1), num(row.seconds_per_query, 2)]
            out.append("| " + " | ".join(cells) + " |")
        if self.notes:
            out.append("")
            out.extend(f"- {note}" for note in self.notes)
        return "\n".join(out) + "\n"

    def plot_points(self) -> list[dict[str, Any]]:
        """Per method: tokens kept per query (x), overall score and its interval (y)."""
        return [{"method": r.method, "tokens": r.kept_tokens, "score": r.score, "low": r.low, "high": r.high}
                for r in self.overall()]


def read_comparison_run(out: str | os.PathLike) -> dict[str, Any]:
    """The comparison's ``run.json`` (its methods and their folders)."""
    from .runner import COMPARISON_KIND, RUN_FILE

    out = Path(out)
    path = out / RUN_FILE
    if not out.is_dir():
        raise InputError(f"{out} is not a directory; pass the --out folder of fluxmem eval ... --memory a,b,c.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{out} holds no {RUN_FILE}; pass the --out folder of fluxmem eval ... --memory a,b,c.") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is unreadable ({error}).") from None
    if record.get("kind") != COMPARISON_KIND:
        raise InputError(f"{out} holds the run of one memory method, not a comparison; fluxmem score {out} shows it.")
    return record


def comparison_of_run(out: str | os.PathLike, *, resamples: int = 1000, seed: int = 0) -> Comparison:
    """The comparison of the run folder ``out``, from its files alone."""
    import numpy as np

    from .runner import gather_records, score_run

    if resamples < 0:
        raise InputError(f"resamples must be >= 0, got {resamples}.")
    out = Path(out)
    run = read_comparison_run(out)
    methods: list[str] = list(run["memory"])
    bench = get_benchmark(run["benchmark"])
    per_method = []
    for method in methods:
        folder = out / run["folders"][method]
        scores, _ = score_run(folder, write=False)
        sub_run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        protocol = protocol_from_record(sub_run.get("settings", {}).get("protocol_settings"))
        items = [EvalItem.from_dict(d) for d in _jsonl(folder / "items.jsonl")]
        answers = {str(r["uid"]): r for r in gather_records(folder)}
        per_method.append((method, scores, items, answers, protocol))
    tasks = list(dict.fromkeys(t for _, scores, *_ in per_method for t in scores.get("tasks", {})))
    items = per_method[0][2]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(items), size=(resamples, len(items))) if items else np.zeros((0, 0), dtype=int)
    comparison = Comparison(benchmark=bench.name, title=bench.title, budget=run.get("budget"), methods=methods,
                            tasks=tasks, resamples=resamples, seed=seed)
    overall_rows = []
    for method, scores, method_items, answers, protocol in per_method:
        boot = _bootstrap(bench, method_items, answers, protocol, draws)
        for task in tasks:
            records = [answers[it.uid] for it in method_items if it.task == task and it.uid in answers]
            row = _row(method, task, scores.get("tasks", {}).get(task), records, scores.get("counted", {}).get("tasks", {}).get(task))
            row.low, row.high = _interval(boot.get(task, []))
            comparison.rows.append(row)
        records = [answers[it.uid] for it in method_items if it.uid in answers]
        row = _row(method, None, scores.get("overall"), records, scores.get("counted", {}).get("overall"))
        row.low, row.high = _interval(boot.get(None, []))
        overall_rows.append(row)
    comparison.rows.sort(key=lambda r: tasks.index(r.task))  # stable: methods in the order asked per task
    comparison.rows.extend(overall_rows)
    comparison.notes.append(
        f"score: the benchmark's official score; CI: {round(100 * CONFIDENCE)}% percentile bootstrap over the "
        f"{len(items)} questions ({resamples} resamples, seed {seed}, the same resamples for every method)")
    comparison.notes.append(
        "tokens kept: visual tokens the language model saw per answered query (mean, share of the video's tokens); "
        "memory ms: the memory's time per query, solving the budget included (match:M runs M first, except for M "
        "itself); s / query: "
        "decoding, encoding, memory and generation (each clip is decoded and encoded once for all methods, "
        "counted in every method's time)")
    return comparison


def _jsonl(path: Path) -> list[dict[str, Any]]:
    from .common import iter_jsonl

    return list(iter_jsonl(path)) if path.exists() else []


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _row(method: str, task: str | None, score, records: Sequence[Mapping[str, Any]], counted) -> MethodRow:
    answered = [r for r in records if not r.get("skipped")]
    budgets = [r["budget_tokens"] for r in answered if r.get("budget_tokens") is not None]
    return MethodRow(
        method=method,
        task=task,
        queries=int(counted) if counted is not None else len(answered),
        score=score,
        kept_tokens=_mean([float(r.get("kept_tokens", 0)) for r in answered]),
        visual_tokens=_mean([float(r.get("visual_tokens", 0)) for r in answered]),
        budget_tokens=_mean([float(b) for b in budgets]) if budgets else None,
        memory_ms=_mean([float(r.get("memory_ms", 0.0)) for r in answered]),
        seconds_per_query=_mean([float(r["latency_ms"]) / 1000 for r in answered if r.get("latency_ms") is not None]),
    )


def _bootstrap(bench, items: Sequence[EvalItem], answers: Mapping[str, Any], protocol, draws) -> dict[str | None, list[float]]:
    """Scores (per task, and overall under ``None``) of every resample of ``items``: the drawn
    questions' per-task counts aggregated as the benchmark does (:meth:`Benchmark.aggregate`,
    each question scored once), or, for a benchmark without it, each resample scored whole."""
    import numpy as np

    out: dict[str | None, list[float]] = {}

    def collect(scores):
        if scores.get("overall") is not None:
            out.setdefault(None, []).append(float(scores["overall"]))
        for task, value in (scores.get("tasks") or {}).items():
            if value is not None:
                out.setdefault(task, []).append(float(value))

    probe = bench.aggregate(Tally(), {})
    if probe is None:
        for draw in draws:
            collect(_score_resample(bench, items, answers, protocol, draw))
        return out
    tasks = sorted({it.task for it in items})
    counted, correct = np.zeros((len(items), len(tasks))), np.zeros((len(items), len(tasks)))
    categories: dict[str, str] = {}
    for row, item in enumerate(items):
        alone = {item.uid: answers[item.uid]} if item.uid in answers else {}
        scores = bench.score([item], alone, DataIssues(log_limit=0), protocol)
        categories.update(scores.get("task_categories") or {})
        for task, n in ((scores.get("counted") or {}).get("tasks") or {}).items():
            counted[row, tasks.index(task)] = n
            correct[row, tasks.index(task)] = n * scores["tasks"][task] / 100.0
    for draw in draws:
        times = np.bincount(draw, minlength=len(items)).astype(float)
        tally = Tally()
        for column, task in enumerate(tasks):
            n = int(round(times @ counted[:, column]))
            if n:
                tally.counted[task] = n
                tally.correct[task] = int(round(times @ correct[:, column]))
        collect(bench.aggregate(tally, categories))
    return out


def _score_resample(bench, items, answers, protocol, draw) -> dict[str, Any]:
    """One resample scored whole: a question drawn twice counts twice (each copy its own uid)."""
    picked, amap = [], {}
    for copy, index in enumerate(draw.tolist()):
        item = items[index]
        uid = f"{item.uid}#{copy}"
        picked.append(replace(item, uid=uid))
        if item.uid in answers:
            amap[uid] = {**answers[item.uid], "uid": uid}
    return bench.score(picked, amap, DataIssues(log_limit=0), protocol)


def _interval(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    import numpy as np

    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return round(float(low), 4), round(float(high), 4)


def write_comparison(out: str | os.PathLike, comparison: Comparison) -> dict[str, Path]:
    """``compare.md`` and ``compare.json`` in ``out`` (written whole, then renamed)."""
    from ..outputs import write_text

    out = Path(out)
    paths = {"markdown": out / COMPARE_MD, "json": out / COMPARE_JSON}
    write_text(paths["markdown"], comparison.to_markdown())
    write_text(paths["json"], json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return paths
