"""Benchmark-independent pieces of the evaluation layer.

* :class:`EvalItem` — one normalised question (or one forward probe) that a model runner can
  answer without knowing which benchmark it came from: a video, the seconds of it the model may
  see, the exact prompt, and the gold answer.
* :class:`DataIssues` — a counter of everything odd met in the data or the answers. Messy data is
  warned about and counted, never fatal.
* :func:`parse_timestamp` — ``"HH:MM:SS"`` and the messy variants found in real annotation files.
* :func:`fit_to_duration` — the hook the runner calls once it knows a video's length.
* JSON-lines answers files (:func:`append_jsonl`, :func:`read_jsonl`, :func:`dedupe_by_uid`,
  :func:`load_answers`, :func:`pending_items`, :func:`shard_items`) for resumable runs.
* :class:`ScoreTable` — official and robust scores side by side, as Markdown and JSON.

Nothing here imports torch or a model: the runner sits on top.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ConfigError, InputError
from ..outputs import append_line

log = logging.getLogger("fluxmem.eval")

#: Kinds of question an :class:`EvalItem` may hold (what the runner must do, how it is scored).
KINDS = ("mcq", "sqa", "proactive", "rec", "ssr", "crr")

#: Letters used for options; StreamingBench has a few items with up to seven options.
LETTERS = "ABCDEFG"


# --------------------------------------------------------------------------------------------
# Data issues
# --------------------------------------------------------------------------------------------


class DataIssues:
    """Counts (and logs, a few times per kind) every problem met in the data or the answers.

    ``warn(kind)`` records a repaired or suspicious value; ``skip(reason)`` records an item left
    out of the evaluation (it is also counted as a warning of that kind); ``note(kind)`` counts an
    expected, harmless normalisation (e.g. an option given its missing ``"A. "`` prefix) without
    logging. Nothing here ever raises: the run goes on and the counts go into the results.
    """

    def __init__(self, log_limit: int = 5, example_limit: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self._log_limit = log_limit
        self._example_limit = example_limit

    def warn(self, kind: str, detail: str = "") -> None:
        """Count one warning of ``kind`` (and log it, up to ``log_limit`` times per kind)."""
        self.counts[kind] += 1
        n = self.counts[kind]
        if detail:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < self._example_limit:
                ex.append(detail)
        if n <= self._log_limit:
            log.warning("%s: %s", kind, detail or "(no detail)")
        if n == self._log_limit:
            log.warning("%s: further warnings of this kind are counted, not logged", kind)

    def skip(self, reason: str, detail: str = "") -> None:
        """Count one item left out for ``reason`` (also a warning of that kind)."""
        self.skipped[reason] += 1
        self.warn(reason, detail)

    def note(self, kind: str, n: int = 1) -> None:
        """Count an expected normalisation without logging it."""
        self.notes[kind] += n

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]

    @property
    def total(self) -> int:
        """Number of warnings (skips included)."""
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def merge(self, other: DataIssues) -> DataIssues:
        """Add ``other``'s counts to this one (returns self)."""
        self.counts.update(other.counts)
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)
        for k, ex in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(ex[: max(0, self._example_limit - len(mine))])
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for results files."""
        return {
            "warnings": dict(sorted(self.counts.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "notes": dict(sorted(self.notes.items())),
            "examples": {k: list(v) for k, v in sorted(self.examples.items())},
        }

    def summary_lines(self) -> list[str]:
        """One line per kind, for the notes under a score table."""
        lines = []
        for kind, n in sorted(self.counts.items()):
            tag = " (items skipped)" if self.skipped.get(kind) else ""
            lines.append(f"{kind}: {n}{tag}")
        for kind, n in sorted(self.notes.items()):
            lines.append(f"{kind}: {n} (normalised)")
        return lines

    def __repr__(self) -> str:
        return f"DataIssues(warnings={dict(self.counts)}, skipped={dict(self.skipped)})"


def _issues(issues: DataIssues | None) -> DataIssues:
    return issues if issues is not None else DataIssues()


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def parse_timestamp(
    value: Any, issues: DataIssues | None = None, where: str = ""
) -> float | None:
    """Seconds from a timestamp; ``None`` (and a ``timestamp_unparseable`` warning) if hopeless.

    Accepted, silently: numbers (``12``, ``12.5``, the OVO-Bench form) and ``"H:MM:SS"`` with any
    number of hour digits and two-digit minutes and seconds below 60 (seconds may carry a
    fraction, ``"00:01:02.5"``). Repaired, with one warning per value (the most serious applies):

    * ``timestamp_field_overflow`` — a minutes or seconds field of 60 or more, e.g. ``"00:12450"``.
      Read with the benchmark's own arithmetic (each field times a power of 60: 12450 s), so our
      clip is the one the official code cuts; such values usually lie past the end of the video,
      which :func:`fit_to_duration` then reports.
    * ``timestamp_two_fields`` — ``"MM:SS"``, e.g. ``"00:24"`` → 24 s.
    * ``timestamp_unpadded`` — a minutes or seconds field not written with two digits,
      e.g. ``"00:00:8"`` → 8 s.
    * ``timestamp_plain_seconds`` — a string holding a bare number, ``"75"`` → 75 s.

    Unparseable: empty strings, negative or non-finite numbers, booleans, other characters, more
    than three fields.
    """
    where_s = f"{where}: " if where else ""

    def bad() -> None:
        if issues is not None:
            issues.warn("timestamp_unparseable", f"{where_s}{value!r}")

    if isinstance(value, bool) or value is None:
        return bad()
    if isinstance(value, (int, float)):
        v = float(value)
        return v if math.isfinite(v) and v >= 0 else bad()
    if not isinstance(value, str):
        return bad()
    s = value.strip()
    if not s:
        return bad()
    if _NUMBER.match(s):
        if issues is not None:
            issues.warn("timestamp_plain_seconds", f"{where_s}{value!r} read as {float(s):g} s")
        return float(s)
    parts = s.split(":")
    if len(parts) not in (2, 3):
        return bad()
    for i, p in enumerate(parts):
        pattern = _NUMBER if i == len(parts) - 1 else re.compile(r"^\d+$")
        if not pattern.match(p):
            return bad()
    seconds = 0.0
    for i, p in enumerate(reversed(parts)):
        seconds += float(p) * 60**i
    problem = None
    lower = parts[1:]  # fields after the leading one must be two digits below 60
    if any(float(p) >= 60 for p in lower):
        problem = "timestamp_field_overflow"
    elif len(parts) == 2:
        problem = "timestamp_two_fields"
    elif any(len(p.split(".")[0]) != 2 for p in lower):
        problem = "timestamp_unpadded"
    if problem and issues is not None:
        issues.warn(problem, f"{where_s}{value!r} read as {seconds:g} s")
    return seconds


def format_timestamp(seconds: float) -> str:
    """``"HH:MM:SS"`` (with a fraction when there is one) for ``seconds``."""
    whole = int(seconds)
    frac = seconds - whole
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    out = f"{h:02d}:{m:02d}:{s:02d}"
    if frac > 1e-9:
        out += f"{frac:.3f}".lstrip("0").rstrip("0")
    return out


# --------------------------------------------------------------------------------------------
# The normalised question
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    """One question (or one forward probe) of a benchmark, ready for a model runner.

    Fields:
        benchmark: ``"streamingbench"`` or ``"ovobench"``.
        uid: stable unique string id within the benchmark (resume, dedup, sharding).
        task: the benchmark's task name (StreamingBench ``task_type`` in canonical spelling,
            OVO-Bench abbreviation such as ``"EPM"``).
        category: the benchmark's category (``"Real-Time Visual Understanding"``, ``"backward"``…).
        video: video path relative to the benchmark's video root.
        query_time: seconds into the video at which the question is asked.
        clip_start, clip_end: the seconds ``[clip_start, clip_end]`` the model may see (from the
            protocol and, for StreamingBench, the ``context`` window). ``clip_end`` may exceed the
            video's length until the runner calls :func:`fit_to_duration`.
        prompt: the exact text prompt to send (for ``"proactive"`` items: the polling prompt;
            the final question is ``meta["final_prompt"]``).
        kind: one of :data:`KINDS` — ``"mcq"``, ``"sqa"`` (MCQ with conversation context),
            ``"proactive"`` (polling dialog), ``"rec"`` (count), ``"ssr"``/``"crr"`` (yes/no).
        gold: the letter (mcq/sqa), the count (rec, int), ``"Yes"``/``"No"`` (ssr/crr), or the
            expected output text (proactive).
        options: option texts as shown to the model (empty when not multiple choice).
        meta: everything else (raw timestamp, context, probe index, proactive poll times…);
            plain JSON values. Not part of equality or hashing.
    """

    benchmark: str
    uid: str
    task: str
    category: str
    video: str
    query_time: float
    clip_start: float
    clip_end: float
    prompt: str
    kind: str
    gold: Any
    options: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"EvalItem {self.uid!r}: kind {self.kind!r} is not one of {KINDS}")
        if not isinstance(self.uid, str) or not self.uid:
            raise InputError(f"EvalItem uid must be a non-empty string, got {self.uid!r}")
        for name in ("query_time", "clip_start", "clip_end"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"EvalItem {self.uid!r}: {name} must be a finite number >= 0")
            object.__setattr__(self, name, float(v))
        if self.clip_end < self.clip_start:
            raise InputError(
                f"EvalItem {self.uid!r}: clip_end {self.clip_end} < clip_start {self.clip_start}"
            )
        object.__setattr__(self, "options", tuple(str(o) for o in self.options))

    @property
    def clip_length(self) -> float:
        """Seconds of video the model may see."""
        return self.clip_end - self.clip_start

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (options as a list)."""
        d = asdict(self)
        d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalItem:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["options"] = tuple(d.get("options") or ())
        d["meta"] = dict(d.get("meta") or {})
        return cls(**d)


def fit_to_duration(
    item: EvalItem,
    duration: float | None,
    issues: DataIssues | None = None,
    *,
    policy: str = "clamp",
    tolerance: float = 1.0,
) -> EvalItem | None:
    """The runner's hook once it knows the video's length: cap the clip at the end of the video.

    * ``duration`` missing, not finite or ``<= 0`` (an unreadable video): skipped as
      ``unreadable_video``, returns ``None``.
    * The question is asked at most ``tolerance`` seconds past the end (e.g. OVO-Bench's
      ``ceil(realtime)``): ``clip_end`` is capped silently, as the official code does.
    * Asked later than that (``questions past the end``): with ``policy="clamp"`` warned as
      ``past_end_clamped`` and the clip moved to end at the video's end, keeping its length;
      with ``policy="skip"`` skipped as ``past_end`` and ``None`` returned.
    * Proactive items: polls after the end are dropped; an item whose ground-truth time lies
      past the end follows ``policy`` as above; one left with no poll is skipped.

    When it returns ``None``, write :func:`skip_record` (``reason`` = the skip's kind) to the
    answers file: the skip then survives a resume and is counted once at scoring. (Pass the
    loader's ``DataIssues`` to the scorer, not the one given here, or it counts twice.)
    """
    if policy not in ("clamp", "skip"):
        raise ConfigError(f"policy must be 'clamp' or 'skip', got {policy!r}")
    iss = _issues(issues)
    if duration is None or not isinstance(duration, (int, float)) or not math.isfinite(
        duration
    ) or duration <= 0:
        iss.skip("unreadable_video", f"{item.uid}: duration {duration!r}")
        return None
    duration = float(duration)
    if item.kind == "proactive":
        return _fit_proactive(item, duration, iss, policy, tolerance)
    if item.clip_end <= duration:
        return item
    if item.query_time <= duration + tolerance:
        return replace(item, clip_end=duration, clip_start=min(item.clip_start, duration))
    detail = f"{item.uid}: asked at {item.query_time:g} s, video is {duration:g} s"
    if policy == "skip":
        iss.skip("past_end", detail)
        return None
    iss.warn("past_end_clamped", detail)
    new_start = max(0.0, duration - item.clip_length)
    meta = dict(item.meta)
    meta["clamped_from"] = [item.clip_start, item.clip_end]
    return replace(item, clip_start=new_start, clip_end=duration, meta=meta)


def _fit_proactive(
    item: EvalItem, duration: float, iss: DataIssues, policy: str, tolerance: float
) -> EvalItem | None:
    if item.clip_end <= duration:
        return item
    gt = float(item.meta.get("gt_time", item.clip_end))
    detail = f"{item.uid}: ground truth at {gt:g} s, video is {duration:g} s"
    if gt > duration + tolerance:
        if policy == "skip":
            iss.skip("past_end", detail)
            return None
        iss.warn("past_end_clamped", detail)
    polls = [t for t in item.meta.get("poll_times", []) if t <= duration + 1e-9]
    if not polls or item.clip_start >= duration:
        iss.skip("no_poll_window", detail)
        return None
    meta = dict(item.meta)
    meta["poll_times"] = polls
    return replace(item, clip_end=min(item.clip_end, duration), meta=meta)


# --------------------------------------------------------------------------------------------
# JSON-lines answers files
# --------------------------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, EvalItem):
        return o.to_dict()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Append one record as one whole line, flushed and (by default) fsync'ed
    (:func:`fluxmem.outputs.append_line`): a crash loses at most the line being written, and a
    partial line an earlier crash left at the end is dropped before the new record goes in.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    append_line(p, json.dumps(dict(record), ensure_ascii=False, default=_json_default), fsync=fsync)


def iter_jsonl(
    path: str | os.PathLike, issues: DataIssues | None = None, *, missing_ok: bool = False
) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (``truncated_last_line``) or any other
    undecodable or non-object line (``bad_jsonl_line``) is counted and passed over.
    """
    p = Path(path)
    if not p.exists():
        if missing_ok:
            return
        raise InputError(f"answers file {p} does not exist; check the path")
    data = p.read_bytes()
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    ends_clean = text.endswith("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if issues is not None:
                kind = "truncated_last_line" if last and not ends_clean else "bad_jsonl_line"
                issues.warn(kind, f"{p.name}:{i + 1}: {line[:60]!r}")
            continue
        if not isinstance(rec, dict):
            if issues is not None:
                issues.warn("bad_jsonl_line", f"{p.name}:{i + 1}: not an object")
            continue
        yield rec


def read_jsonl(
    path: str | os.PathLike, issues: DataIssues | None = None, *, missing_ok: bool = False
) -> list[dict[str, Any]]:
    """All readable records of a JSON-lines file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, issues, missing_ok=missing_ok))


def dedupe_by_uid(
    records: Iterable[Mapping[str, Any]], issues: DataIssues | None = None, *, key: str = "uid"
) -> list[dict[str, Any]]:
    """Records with the first occurrence of each ``uid`` kept (``duplicate_uid`` counted);
    records without one are dropped (``record_without_uid``)."""
    seen: set[str] = set()
    out = []
    for rec in records:
        uid = rec.get(key)
        if uid is None or uid == "":
            if issues is not None:
                issues.warn("record_without_uid", str(dict(rec))[:80])
            continue
        uid = str(uid)
        if uid in seen:
            if issues is not None:
                issues.warn("duplicate_uid", uid)
            continue
        seen.add(uid)
        out.append(dict(rec))
    return out


def load_answers(
    path: str | os.PathLike, issues: DataIssues | None = None, *, missing_ok: bool = False
) -> dict[str, dict[str, Any]]:
    """``{uid: record}`` from an answers file, first record per uid kept."""
    recs = dedupe_by_uid(iter_jsonl(path, issues, missing_ok=missing_ok), issues)
    return {str(r["uid"]): r for r in recs}


def answer_record(item: EvalItem, response: Any, **extra: Any) -> dict[str, Any]:
    """The answers-file record for ``item``: ``uid``, ``benchmark``, ``task``, ``response``
    (a string, or for proactive items the dialog list of :func:`~fluxmem.eval.streamingbench.
    proactive_dialog`), plus ``extra`` (timings, frame counts…)."""
    rec = {"uid": item.uid, "benchmark": item.benchmark, "task": item.task, "response": response}
    rec.update(extra)
    return rec


def skip_record(item: EvalItem, reason: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    """The answers-file record of an item the runner could not answer (``"unreadable_video"``,
    ``"past_end"``…): scored as skipped under ``reason``, never as wrong."""
    rec = {
        "uid": item.uid,
        "benchmark": item.benchmark,
        "task": item.task,
        "response": None,
        "skipped": reason,
    }
    if detail:
        rec["detail"] = detail
    rec.update(extra)
    return rec


def pending_items(
    items: Sequence[EvalItem], answers_path: str | os.PathLike, issues: DataIssues | None = None
) -> list[EvalItem]:
    """Items whose uid has no record yet in ``answers_path`` (resume)."""
    done = {str(r.get("uid")) for r in iter_jsonl(answers_path, issues, missing_ok=True)}
    return [it for it in items if it.uid not in done]


def shard_items(items: Sequence[EvalItem], num_shards: int, index: int) -> list[EvalItem]:
    """The items of shard ``index`` out of ``num_shards``, by a stable hash of the uid (the
    same split on every machine and every run)."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ConfigError(f"shard {index} of {num_shards} does not exist")
    return [it for it in items if zlib.crc32(it.uid.encode("utf-8")) % num_shards == index]


def as_answer_map(
    answers: Any, issues: DataIssues | None = None
) -> dict[str, dict[str, Any]]:
    """``{uid: record}`` from a path, a mapping, or an iterable of records."""
    if isinstance(answers, (str, os.PathLike)):
        return load_answers(answers, issues)
    if isinstance(answers, Mapping):
        return {str(k): dict(v) for k, v in answers.items()}
    return {str(r["uid"]): r for r in dedupe_by_uid(answers, issues)}


# --------------------------------------------------------------------------------------------
# Tallies and score tables
# --------------------------------------------------------------------------------------------


class ReplyScore(NamedTuple):
    """The two verdicts on one reply: the benchmark's official rule and our robust one.
    ``None`` means the reply is left out of that column's count (e.g. an empty Sequential-QA
    reply under the official rule)."""

    official: bool | None
    robust: bool | None


class Tally:
    """Correct / counted per task, and skipped per reason, for one score column."""

    def __init__(self) -> None:
        self.correct: Counter[str] = Counter()
        self.counted: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def add(self, task: str, ok: bool) -> None:
        self.counted[task] += 1
        self.correct[task] += int(bool(ok))

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def accuracy(self) -> dict[str, float]:
        """Percent accuracy per task with at least one counted item."""
        return {t: 100.0 * self.correct[t] / n for t, n in self.counted.items() if n > 0}


def column_dict(
    tasks: Mapping[str, float],
    categories: Mapping[str, float],
    overall: float | None,
    counted_tasks: Mapping[str, int],
    counted_categories: Mapping[str, int],
    skipped: Mapping[str, int],
) -> dict[str, Any]:
    """The score dict of one column: ``{"tasks", "categories", "overall", "counted", "skipped"}``
    with accuracies in percent and ``counted = {"tasks", "categories", "overall"}``."""
    return {
        "tasks": dict(tasks),
        "categories": dict(categories),
        "overall": overall,
        "counted": {
            "tasks": dict(counted_tasks),
            "categories": dict(counted_categories),
            "overall": int(sum(counted_tasks.values())),
        },
        "skipped": dict(sorted(skipped.items())),
    }


@dataclass
class ScoreRow:
    """One row of a :class:`ScoreTable`: a task, a category or the overall score."""

    label: str
    level: str  # "task" | "category" | "overall"
    values: dict[str, float | None]
    counts: dict[str, int | None] = field(default_factory=dict)


@dataclass
class ScoreTable:
    """Scores of several columns (official and robust) side by side."""

    title: str
    columns: tuple[str, ...] = ("official", "robust")
    rows: list[ScoreRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        label: str,
        level: str,
        values: Mapping[str, float | None],
        counts: Mapping[str, int | None] | None = None,
    ) -> None:
        self.rows.append(ScoreRow(label, level, dict(values), dict(counts or {})))

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self, digits: int = 2) -> str:
        """A Markdown table: label, n, then one column per score column; category and overall
        rows in bold; ``n`` shows the official count, and the robust one after a slash where
        they differ; notes as a list underneath."""

        def fmt(v: float | None) -> str:
            return "–" if v is None else f"{v:.{digits}f}"

        head = "| | n | " + " | ".join(self.columns) + " |"
        sep = "|---|---:|" + "---:|" * len(self.columns)
        out = [f"### {self.title}", "", head, sep]
        for r in self.rows:
            ns = [r.counts.get(c) for c in self.columns]
            ns_known = [n for n in ns if n is not None]
            if not ns_known:
                n_txt = ""
            elif len(set(ns)) == 1:
                n_txt = str(ns_known[0])
            else:
                n_txt = " / ".join("–" if n is None else str(n) for n in ns)
            cells = [fmt(r.values.get(c)) for c in self.columns]
            label = r.label
            if r.level != "task":
                label = f"**{label}**"
                cells = [f"**{c}**" if c != "–" else c for c in cells]
            out.append(f"| {label} | {n_txt} | " + " | ".join(cells) + " |")
        if self.notes:
            out.append("")
            out.extend(f"- {n}" for n in self.notes)
        return "\n".join(out) + "\n"


def merge_notes(official: Sequence[str], robust: Sequence[str]) -> list[str]:
    """The official column's notes, then the robust column's that differ, marked as such."""
    out = list(official)
    out += [f"robust column: {n}" for n in robust if n not in official]
    return out


def table_from_scores(
    title: str,
    scores: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    *,
    labels: Mapping[str, str] | None = None,
    columns: Sequence[str] = ("official", "robust"),
    notes: Sequence[str] = (),
) -> ScoreTable:
    """A :class:`ScoreTable` from a benchmark score dict (official at the top level, robust under
    ``"robust"``), tasks grouped under their categories in ``groups`` order; tasks present in
    the scores but not in ``groups`` are listed under their category at the end."""
    labels = labels or {}
    cols = {c: (scores if c == "official" else scores.get(c, {})) for c in columns}
    table = ScoreTable(title=title, columns=tuple(columns))
    listed: set[str] = set()
    cat_order = list(groups)
    for col in cols.values():
        for cat in col.get("categories", {}):
            if cat not in cat_order:
                cat_order.append(cat)
    extra_tasks = scores.get("task_categories", {})
    for cat in cat_order:
        tasks = list(groups.get(cat, ()))
        tasks += [t for t, c in extra_tasks.items() if c == cat and t not in tasks]
        any_row = False
        for t in tasks:
            if not any(t in col.get("tasks", {}) for col in cols.values()):
                continue
            listed.add(t)
            any_row = True
            table.add(
                labels.get(t, t),
                "task",
                {c: col.get("tasks", {}).get(t) for c, col in cols.items()},
                {c: col.get("counted", {}).get("tasks", {}).get(t) for c, col in cols.items()},
            )
        if any_row or any(cat in col.get("categories", {}) for col in cols.values()):
            table.add(
                labels.get(cat, cat),
                "category",
                {c: col.get("categories", {}).get(cat) for c, col in cols.items()},
                {
                    c: col.get("counted", {}).get("categories", {}).get(cat)
                    for c, col in cols.items()
                },
            )
    table.add(
        "Overall",
        "overall",
        {c: col.get("overall") for c, col in cols.items()},
        {c: col.get("counted", {}).get("overall") for c, col in cols.items()},
    )
    table.notes.extend(scores.get("notes", []))
    for c, col in cols.items():
        if col.get("skipped"):
            sk = ", ".join(f"{k} {v}" for k, v in col["skipped"].items())
            table.notes.append(f"skipped ({c}): {sk}")
    table.notes.extend(notes)
    return table


# --------------------------------------------------------------------------------------------
# Letters
# --------------------------------------------------------------------------------------------

_CUE = re.compile(
    r"(?i:answer|option|choice)\s*(?i:is|would be|should be)?\s*[:：]?\s*(?i:option\s*)?"
    r"[\(\[\"'*]*(?:([A-G])(?![A-Za-z])|([a-g])(?=\s*[\.\)\]:：,\"'*]|\s*$))"
)
_LEAD = re.compile(r"^[\s\(\[\"'*]*([A-Ga-g])(?:\s*[\.\)\]:：,*\"']|\s*$)")
_LEAD_UPPER = re.compile(r"^[\s\(\[\"'*]*([A-G])(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])([A-G])(?![A-Za-z])")


def robust_letter(reply: Any, n_options: int = 7) -> str | None:
    """The option letter a reply means, forgiving format slips; ``None`` if none is found.

    In order: a letter after a cue (``"The answer is B."``, ``"Answer: D) ..."``,
    ``"option (c)"``); a letter opening the reply, upper or lower case, alone or followed by
    ``. ) ] : ,`` (``"b"``, ``" (C)"``, ``"c. cat"``); an upper-case letter opening the reply as a
    word (``"A cat"``); else the first standalone upper-case letter anywhere. Only letters
    among the first ``n_options`` count.
    """
    if not isinstance(reply, str):
        return None
    valid = LETTERS[: max(1, min(n_options, len(LETTERS)))]
    s = reply.strip()
    if not s:
        return None
    for m in _CUE.finditer(s):
        letter = (m.group(1) or m.group(2)).upper()
        if letter in valid:
            return letter
    m = _LEAD.match(s)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    m = _LEAD_UPPER.match(s)
    if m and m.group(1) in valid:
        return m.group(1)
    for m in _STANDALONE.finditer(s):
        if m.group(1) in valid:
            return m.group(1)
    return None


def letters_phrase(n: int) -> str:
    """``"A, B, C, or D"`` for 4 options, ``"A or B"`` for 2."""
    ls = list(LETTERS[:n])
    if n <= 1:
        return "".join(ls)
    if n == 2:
        return f"{ls[0]} or {ls[1]}"
    return ", ".join(ls[:-1]) + ", or " + ls[-1]


def check_replies_file(path: Path) -> None:
    """A replies file is an existing UTF-8 text file; one line naming what it is instead."""
    if path.is_dir():
        raise InputError(f"replies {str(path)!r} is a directory; pass the JSON-lines file of replies.")
    if not path.is_file():
        raise InputError(f"replies file {str(path)!r} does not exist; check the path.")
    head = path.read_bytes()
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4]:
        raise InputError(f"replies file {str(path)!r} is UTF-16 encoded; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8).")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"replies file {str(path)!r} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
