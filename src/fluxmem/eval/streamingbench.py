"""StreamingBench: annotations, prompts and scoring (``shared/spec/benchmarks.md``).

Reproduces the protocol of the benchmark's public code (THUNLP-MT/StreamingBench: the
``StreamingBench``, ``StreamingBenchSQA`` and ``StreamingBenchProactive`` evaluators and the
``count.py`` scorer) in our own code, and adds a robust column beside the official one.

Layouts read (a file, or a directory holding any number of them):

* JSON of the benchmark's repo: a list of subsets ``{video_path, questions: [...]}``; Sequential
  QA nested one level deeper (a list of videos, each a list of subsets).
* CSV of the dataset card, one per category: ``question_id, task_type, question, time_stamp,
  answer, options, frames_required, temporal_clue_type`` (proactive files also
  ``ground_truth_time_stamp, ground_truth_output``); the video is ``sample_N/video.mp4`` with
  ``N`` from ``question_id`` (``"Real-Time Visual Understanding_sample_332_4"``).

Protocol settled from the official code:

* Clip: a question asked at ``t`` sees ``[max(0, t - context), t]``; ``context=None`` (or ``<= 0``)
  means the whole past ``[0, t]`` (the repo's ``CONTEXT_TIME=-1``). The leaderboard's main setting
  is 60 s. Proactive items see ``[t, now]`` at each poll, whatever the context.
* Prompts: :func:`build_mcq_prompt`, :func:`build_sqa_prompt`, :func:`build_proactive_poll_prompt`,
  :func:`build_proactive_final_prompt` — the official texts. Where an item has 5–7 options the
  official template shows only the first four (``str.format`` drops the rest); we show all of
  them and say how many there are (``"the six options"``, ``"(A, B, C, D, E, or F)"``).
* Official score: the reply's FIRST CHARACTER must equal the gold letter (case-sensitive): a
  leading space or a lower-case letter is wrong. Sequential QA leaves empty replies out of the
  count (``if not reply: continue`` in the official scorer); elsewhere an empty reply would crash
  the official scorer, so we count it wrong. The robust column uses
  :func:`~fluxmem.eval.common.robust_letter` and counts empty Sequential-QA replies as wrong.
* Proactive Output: the runner polls once per second from ``t+1`` to ``gt+4`` and stops at the
  first reply containing "yes" (case-insensitive, as the official loop decides), then asks the
  question. Timing is right iff ``|t_yes - gt| <= 2`` s; the answer is right iff the expected
  output is a substring (case-sensitive) of the final reply. The item is correct iff both hold —
  the official ``count.py`` counts ``answer_correct`` only inside ``time_correct``. (An earlier
  version of that script scored timing alone; the time-only accuracy is reported in ``extra``.)
  The official scorer reads the time of the dialog's last turn; we use the time of the first
  "yes" and call an item without one wrong, which is the same on every dialog the official loop
  produces, and right on dialogs cut short at the end of the video.
* Aggregation: subtask and category accuracies are micro averages; Contextual =
  (250·MCU + 250·ACU + 250·SQA + 51·PO)/801 and Overall = (2500·RTVU + 1000·Omni + 801·Ctx)/4301,
  each over the parts present (and said so in the notes).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from ..errors import ConfigError, InputError
from .common import (
    LETTERS,
    DataIssues,
    EvalItem,
    ReplyScore,
    ScoreTable,
    Tally,
    _issues,
    as_answer_map,
    column_dict,
    letters_phrase,
    merge_notes,
    parse_timestamp,
    robust_letter,
    table_from_scores,
)
from .protocol import published_letter, published_time_stamp

BENCHMARK = "streamingbench"

RTVU = "Real-Time Visual Understanding"
OMNI = "Omni-Source Understanding"
CONTEXTUAL = "Contextual Understanding"

#: Nominal category sizes: the weights of the overall score.
CATEGORY_WEIGHTS = {RTVU: 2500, OMNI: 1000, CONTEXTUAL: 801}

SQA = "Sequential Question Answering"
PO = "Proactive Output"
MCU = "Misleading Context Understanding"
ACU = "Anomaly Context Understanding"

#: Canonical task names per category, with leaderboard abbreviation and nominal size.
TASKS: dict[str, tuple[tuple[str, str, int], ...]] = {
    RTVU: (
        ("Object Perception", "OP", 367),
        ("Causal Reasoning", "CR", 128),
        ("Clips Summarize", "CS", 317),
        ("Attribute Perception", "ATP", 306),
        ("Event Understanding", "EU", 161),
        ("Text-Rich Understanding", "TR", 321),
        ("Prospective Reasoning", "PR", 108),
        ("Spatial Understanding", "SU", 246),
        ("Action Perception", "ACP", 353),
        ("Counting", "CT", 193),
    ),
    OMNI: (
        ("Emotion Recognition", "ER", 250),
        ("Scene Understanding", "SCU", 250),
        ("Source Discrimination", "SD", 250),
        ("Multimodal Alignment", "MA", 250),
    ),
    CONTEXTUAL: (
        (MCU, "MCU", 250),
        (ACU, "ACU", 250),
        (SQA, "SQA", 250),
        (PO, "PO", 51),
    ),
}

#: Contextual Understanding is a weighted mean of its tasks by these nominal sizes.
CONTEXTUAL_WEIGHTS = {name: size for name, _, size in TASKS[CONTEXTUAL]}

TASK_CATEGORY = {name: cat for cat, ts in TASKS.items() for name, _, _ in ts}
TASK_ABBR = {name: abbr for ts in TASKS.values() for name, abbr, _ in ts}

#: Other spellings met in the data (the repo's JSON says "Object Recognition", "Related Context
#: Understanding", "Active Output"…).
_ALIASES = {
    "object recognition": "Object Perception",
    "attribute recognition": "Attribute Perception",
    "action recognition": "Action Perception",
    "text rich understanding": "Text-Rich Understanding",
    "clip summarize": "Clips Summarize",
    "clips summarization": "Clips Summarize",
    "related context understanding": SQA,
    "sequential qa": SQA,
    "sequential question answer": SQA,
    "active output": PO,
    "proactive": PO,
    "misleading context": MCU,
    "anomaly context": ACU,
}

_CATEGORY_ALIASES = {
    "real time visual understanding": RTVU,
    "omni source understanding": OMNI,
    "contextual understanding": CONTEXTUAL,
    # the dataset card splits Contextual Understanding into three files
    "sequential question answering": CONTEXTUAL,
    "proactive output": CONTEXTUAL,
}


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", str(s))).strip().lower()


_TASK_LOOKUP: dict[str, str] = {}
for _name, _abbr in TASK_ABBR.items():
    _TASK_LOOKUP[_norm(_name)] = _name
    _TASK_LOOKUP[_abbr.lower()] = _name
for _k, _v in _ALIASES.items():
    _TASK_LOOKUP[_norm(_k)] = _v


def canonical_task(name: Any) -> str | None:
    """The canonical task name for a ``task_type`` spelling or abbreviation, else ``None``."""
    if not isinstance(name, str):
        return None
    return _TASK_LOOKUP.get(_norm(name))


def canonical_category(name: Any) -> str | None:
    """The category for a category spelling (or a dataset-card file prefix), else ``None``."""
    if not isinstance(name, str):
        return None
    n = _norm(name)
    for cat in CATEGORY_WEIGHTS:
        if n == _norm(cat):
            return cat
    return _CATEGORY_ALIASES.get(n)


def _task_filter(tasks: Iterable[str] | None) -> Callable[[str, str], bool]:
    """A predicate on (task, category) from names, abbreviations or category names."""
    if tasks is None:
        return lambda t, c: True
    if isinstance(tasks, str):
        tasks = [tasks]
    want_tasks, want_cats = set(), set()
    for t in tasks:
        ct = canonical_task(t)
        cc = canonical_category(t) if ct is None else None
        if ct:
            want_tasks.add(ct)
        elif cc and _norm(t) == _norm(cc):
            want_cats.add(cc)
        else:
            raise ConfigError(
                f"unknown StreamingBench task {t!r}; use a task name, abbreviation "
                f"({', '.join(TASK_ABBR.values())}) or a category name"
            )
    return lambda t, c: t in want_tasks or c in want_cats


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------

_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}

MCQ_INSTRUCTION = (
    "You are an advanced video question-answering AI assistant. You have been provided with "
    "some frames from the video and a multiple-choice question related to the video. Your task "
    "is to carefully analyze the video and provide the best answer to question, choosing from "
    "the {count} options provided. Respond with only the letter ({letters}) of the correct "
    "option."
)

SQA_INSTRUCTION = (
    "You are an advanced video question-answering AI assistant. You have been provided with a "
    "video and a multiple-choice question related to the video. Your task is to carefully "
    "analyze the video and the provided context to answer the question, choosing from the "
    "{count} options provided. Respond with only the letter ({letters}) of the correct option."
)

SQA_CONTEXT_HEADER = (
    "Here are the contextual information related to the video. Please answer the questions "
    "based on the contextual information: "
)

PROACTIVE_TEMPLATE = (
    "You are an advanced image question-answering AI assistant. You have been provided with "
    "images and a question related to the images. Your task is to carefully analyze the images "
    "and provide the answer to the question. You need to carefully confirm whether the images "
    "content meet the conditions of the question, and then output the correct content.\n\n"
    "Question: {question}\n\nThe answer is:\n"
)


def _instruction(template: str, n: int) -> str:
    return template.format(count=_COUNT_WORDS.get(n, str(n)), letters=letters_phrase(n))


def build_mcq_prompt(question: str, options: Sequence[str]) -> str:
    """The official multiple-choice prompt; ``options`` already carry their ``"A. "`` prefixes."""
    return (
        _instruction(MCQ_INSTRUCTION, len(options))
        + f"\n\nQuestion: {question}\n\nOptions:\n"
        + "\n".join(options)
        + "\n\nThe best option is:"
    )


class SQATurn(NamedTuple):
    """An earlier Sequential-QA question of the same video, with its ground-truth answer."""

    time_stamp: str
    question: str
    options: tuple[str, ...]
    answer: str


def sqa_context(history: Sequence[SQATurn]) -> str:
    """The official context block: earlier questions with their GROUND-TRUTH answers."""
    if not history:
        return ""
    return SQA_CONTEXT_HEADER + "".join(
        f"At timestamp {h.time_stamp}, the following question and answer occurred: "
        f"Question: {h.question}; Options: {', '.join(h.options)}; Answer: {h.answer}; "
        for h in history
    )


def build_sqa_prompt(question: str, options: Sequence[str], history: Sequence[SQATurn]) -> str:
    """The official Sequential-QA prompt (for the first question of a video the context is
    empty, leaving the official template's blank lines in place)."""
    return (
        _instruction(SQA_INSTRUCTION, len(options))
        + f"\n\n{sqa_context(history)}\n\n"
        + "Here is the question. Answer it and don't confuse it with the previous conversation.\n"
        + f"Question: {question}\n\nOptions:\n"
        + "\n".join(options)
        + "\n\nThe best option is:"
    )


def build_proactive_poll_prompt(question: str, expected_output: str) -> str:
    """The yes/no prompt asked once per second until the model says it is time."""
    query = (
        f'{question} Is it the right time to output "{expected_output}"? '
        "You can only answer yes or no."
    )
    return PROACTIVE_TEMPLATE.format(question=query)


def build_proactive_final_prompt(question: str) -> str:
    """The prompt asked right after the first "yes", on the same clip."""
    return PROACTIVE_TEMPLATE.format(question=question)


def proactive_says_yes(reply: Any) -> bool:
    """The official polling decision: ``"yes"`` anywhere in the reply, case-insensitive."""
    return isinstance(reply, str) and "yes" in reply.strip().lower()


def proactive_next_turn(item: EvalItem, replies: Sequence[tuple[Any, str]]):
    """The official polling loop of a proactive item as a pure step: given the calls so far
    (``(Turn, reply)`` pairs), the next :class:`~fluxmem.eval.benchmark.Turn` or ``None``.

    Polls ``[t, now]`` once per second (``meta["poll_times"]``) with the polling prompt; after the
    first reply saying yes, asks the question (``meta["final_prompt"]``) on the same clip and
    stops."""
    from .benchmark import Turn

    poll, final, times = item.prompt, item.meta["final_prompt"], item.meta["poll_times"]
    if not replies:
        return Turn(item.clip_start, times[0], poll)
    last_turn, last_reply = replies[-1]
    if last_turn.prompt == final:
        return None
    if proactive_says_yes(last_reply):
        return Turn(item.clip_start, last_turn.end, final)
    polled = sum(1 for turn, _ in replies if turn.prompt == poll)
    if polled >= len(times):
        return None
    return Turn(item.clip_start, times[polled], poll)


def proactive_dialog(item: EvalItem, replies: Sequence[tuple[Any, str]],
                     costs: Sequence[float] = ()) -> list[dict[str, Any]]:
    """The calls of a proactive item as the benchmark's dialog history: a list of ``{"role":
    "user"|"assistant", "content", "time", "cost"}`` turns, a user/assistant pair per call (the
    user turn holds the poll query or the question). Store it as the item's ``response`` (our
    answers file) or under ``"dialog_history"`` (the benchmark's own results file)."""
    poll, final = item.prompt, item.meta["final_prompt"]
    query, question = item.meta.get("poll_query", poll), item.meta.get("question", final)
    history: list[dict[str, Any]] = []
    for k, (turn, reply) in enumerate(replies):
        cost = costs[k] if k < len(costs) else 0.0
        content = question if turn.prompt == final else query
        history.append({"role": "user", "content": content, "time": turn.end, "cost": cost})
        history.append({"role": "assistant", "content": reply, "time": turn.end, "cost": cost})
    return history


PUBLISHED_TEMPLATE = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames "
    "from the video and a multiple-choice question related to the video. Your task is to carefully analyze "
    "the video and provide the best answer to question, choosing from the four options provided. Respond "
    "with only the letter (A, B, C, or D) of the correct option.\n\nQuestion: {question}\n\nOptions:\n"
    "{options}\n\nThe best option is:"
)

PUBLISHED_TEMPLATE_WITHOUT_OPTIONS = (
    "You are an advanced video question-answering AI assistant. You have been provided with a video and a "
    "question related to the video. Your task is to carefully analyze the video and provide the answer to "
    "the question. \n\nQuestion: {question}\n\nAnswer:"
)


def build_published_prompt(question: Any, options: Any) -> str:
    """The published FluxMem StreamingBench prompt: the question verbatim; options read as a
    Python list literal (else split on newlines), option i kept as is when it starts with its
    letter and a dot, else written ``"L. option"``, joined by newlines. Always "four options",
    whatever their number. No options (empty, ``nan``): the template without options."""
    q = "" if question is None else str(question)
    opts = options
    if isinstance(opts, str):
        text = opts
        if text.strip() in ("", "nan"):
            opts = []
        else:
            try:
                opts = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                opts = text.split("\n")
    if opts is None or (isinstance(opts, float) and math.isnan(opts)) or not isinstance(opts, (list, tuple)) \
            or not opts:
        return PUBLISHED_TEMPLATE_WITHOUT_OPTIONS.format(question=q)
    lines = []
    for i, opt in enumerate(opts):
        letter, text = chr(65 + i), str(opt)
        lines.append(text if text.startswith(letter + ".") else f"{letter}. {text}")
    return PUBLISHED_TEMPLATE.format(question=q, options="\n".join(lines))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    """One question as read, before it becomes an :class:`EvalItem`."""

    q: dict[str, Any]
    video: str
    where: str
    source: str
    layout: str
    uid: str = ""
    group: Any = None  # Sequential-QA video key
    order: Any = 0  # order within the group
    prefix_category: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _normalise_options(
    raw_options: Any, issues: DataIssues, where: str
) -> tuple[str, ...] | None:
    """Options with ``"A. "``-style prefixes; ``None`` (skipped) if unusable."""
    if isinstance(raw_options, str):
        try:
            raw_options = ast.literal_eval(raw_options.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            issues.skip("bad_options", f"{where}: cannot read {raw_options[:60]!r}")
            return None
    if not isinstance(raw_options, (list, tuple)):
        issues.skip("bad_options", f"{where}: options {type(raw_options).__name__}")
        return None
    n = len(raw_options)
    if n < 2 or n > len(LETTERS):
        issues.skip("bad_options", f"{where}: {n} options")
        return None
    if n > 4:
        issues.warn("options_5_to_7", f"{where}: {n} options kept (letters A..{LETTERS[n - 1]})")
    out = []
    for i, opt in enumerate(raw_options):
        letter = LETTERS[i]
        s = str(opt).strip()
        m = re.match(r"^([A-G])\s*[\.．]\s*", s)
        if m and m.group(1) == letter:
            out.append(s)
            continue
        if m:
            issues.warn("option_letter_mismatch", f"{where}: option {i} reads {s[:20]!r}")
            s = s[m.end():]
        else:
            issues.note("options_prefixed")
        out.append(f"{letter}. {s}")
    return tuple(out)


def _gold_letter(answer: Any, n: int, issues: DataIssues, where: str) -> str | None:
    s = str(answer).strip() if answer is not None else ""
    m = re.match(r"^\(?([A-Ga-g])(?![A-Za-z])", s)
    if not m or m.group(1).upper() not in LETTERS[:n]:
        issues.skip("bad_answer", f"{where}: answer {answer!r} with {n} options")
        return None
    letter = m.group(1).upper()
    if s != letter:
        issues.warn("answer_normalised", f"{where}: {answer!r} read as {letter}")
    return letter


def _uid_json(video: str, q: Mapping[str, Any]) -> str:
    path = PurePosixPath(str(video).replace("\\", "/"))
    stem = path.stem or "video"
    if stem == "video" and path.parent.name:  # the dataset card's sample_N/video.mp4 layout
        stem = f"{path.parent.name}/{stem}"
    ts = str(q.get("time_stamp", "")).strip()
    h = hashlib.sha1(
        f"{q.get('task_type', '')}\x00{q.get('question', '')}".encode()
    ).hexdigest()[:8]
    return f"{stem}@{ts}#{h}"


def _read_json(path: Path, issues: DataIssues) -> list[_Raw]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read StreamingBench JSON {path}: {e}") from e
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of subsets, got {type(data).__name__}")
    out: list[_Raw] = []

    def subset_rows(subset: Any, where: str, group: Any) -> None:
        if not isinstance(subset, dict) or not isinstance(subset.get("questions"), list):
            issues.skip("bad_subset", f"{where}: not a {{video_path, questions}} object")
            return
        video = str(subset.get("video_path", "")).strip()
        video = video.removeprefix("./")
        for j, q in enumerate(subset["questions"]):
            w = f"{where}.questions[{j}]"
            if not isinstance(q, dict):
                issues.skip("bad_question", f"{w}: not an object")
                continue
            out.append(
                _Raw(
                    q=q,
                    video=video,
                    where=w,
                    source=path.name,
                    layout="json",
                    uid=_uid_json(video, q),
                    group=group,
                    order=len(out),
                )
            )

    for i, entry in enumerate(data):
        where = f"{path.name}[{i}]"
        if isinstance(entry, list):  # Sequential QA: a video, as a list of subsets
            for k, subset in enumerate(entry):
                subset_rows(subset, f"{where}[{k}]", group=(path.name, i))
        else:
            subset_rows(entry, where, group=None)
    return out


_QID = re.compile(r"^(?P<prefix>.*?)_(?:sample_)?(?P<sample>\d+)_(?P<index>\d+)$")


def _read_csv(path: Path, issues: DataIssues, video_prefix: str) -> list[_Raw]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read StreamingBench CSV {path}: {e}") from e
    out: list[_Raw] = []
    for i, row in enumerate(rows):
        row = {(k or "").strip(): v for k, v in row.items()}
        qid = str(row.get("question_id") or "").strip()
        where = f"{path.name}:{i + 2}"
        m = _QID.match(qid)
        if not m:
            issues.skip("bad_question_id", f"{where}: question_id {qid!r}")
            continue
        sample = int(m.group("sample"))
        video = f"sample_{sample}/video.mp4"
        if video_prefix:
            video = str(PurePosixPath(video_prefix) / video)
        out.append(
            _Raw(
                q=row,
                video=video,
                where=f"{where} ({qid})",
                source=path.name,
                layout="csv",
                uid=qid,
                group=(path.name, m.group("prefix"), sample),
                order=int(m.group("index")),
                prefix_category=canonical_category(m.group("prefix")),
                extra={"question_id": qid, "sample": sample},
            )
        )
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".csv"))
        if not files:
            raise InputError(f"{path} holds no .json or .csv StreamingBench annotations")
        return files
    if not path.exists():
        raise InputError(f"StreamingBench annotations {path} do not exist; check the path")
    return [path]


def _read_all(path: str | os.PathLike, issues: DataIssues, video_prefix: str) -> list[_Raw]:
    raws: list[_Raw] = []
    for f in _files(Path(path)):
        if f.suffix.lower() == ".csv":
            raws.extend(_read_csv(f, issues, video_prefix))
        else:
            rs = _read_json(f, issues)
            if video_prefix:
                for r in rs:
                    r.video = str(PurePosixPath(video_prefix) / r.video)
            raws.extend(rs)
    seen: dict[str, int] = {}
    for r in raws:  # unique uids, stable: the n-th duplicate gets "~n"
        n = seen.get(r.uid, 0) + 1
        seen[r.uid] = n
        if n > 1:
            issues.warn("duplicate_question", f"{r.where}: {r.uid}")
            r.uid = f"{r.uid}~{n}"
    return raws


def _load(
    path: str | os.PathLike,
    context: float | None,
    tasks: Iterable[str] | None,
    issues: DataIssues,
    video_prefix: str = "",
    prompts: str = "official",
) -> list[tuple[EvalItem, _Raw]]:
    if context is not None and (not isinstance(context, (int, float)) or math.isnan(context)):
        raise ConfigError(f"context must be seconds (or None for the whole past), got {context!r}")
    window = float(context) if context is not None and context > 0 else None
    keep = _task_filter(tasks)
    raws = _read_all(path, issues, video_prefix)

    # Resolve task and category of every question first: Sequential QA needs its whole video.
    resolved: list[tuple[_Raw, str, str] | None] = []
    for r in raws:
        raw_task = r.q.get("task_type")
        task = canonical_task(raw_task)
        if task is not None:
            cat = TASK_CATEGORY[task]
        else:
            cat = r.prefix_category
            if cat is None:
                issues.skip("unknown_task", f"{r.where}: task_type {raw_task!r}")
                resolved.append(None)
                continue
            issues.warn("unknown_task", f"{r.where}: task_type {raw_task!r} kept under {cat}")
            task = str(raw_task).strip() or "(unnamed)"
        resolved.append((r, task, cat))

    # Sequential-QA history per video, in order (file order in JSON, question index in CSV).
    sqa_groups: dict[Any, list[_Raw]] = {}
    for entry in resolved:
        if entry and entry[1] == SQA:
            r = entry[0]
            key = r.group if r.group is not None else ("video", r.video)
            sqa_groups.setdefault(key, []).append(r)
    history_of: dict[int, list[SQATurn]] = {}
    quiet = DataIssues(log_limit=0)  # earlier turns' problems are counted on their own item
    for members in sqa_groups.values():
        members.sort(key=lambda r: r.order)
        turns: list[SQATurn] = []
        latest = None
        for r in members:
            when = parse_timestamp(r.q.get("time_stamp"), None)
            if when is not None and latest is not None and when < latest:
                issues.warn("sqa_out_of_time_order",
                            f"{r.where}: asked at {when:g} s after a question at {latest:g} s of the same "
                            "video; kept in file order (the benchmark's), its history holds the later one")
            if when is not None:
                latest = when if latest is None else max(latest, when)
            history_of[id(r)] = list(turns)
            opts = _normalise_options(r.q.get("options"), quiet, r.where)
            if opts is None:
                ro = r.q.get("options")
                opts = tuple(str(o) for o in ro) if isinstance(ro, (list, tuple)) else ()
            turns.append(
                SQATurn(
                    str(r.q.get("time_stamp", "")).strip(),
                    str(r.q.get("question", "")).strip(),
                    opts,
                    str(r.q.get("answer", "")).strip(),
                )
            )

    out: list[tuple[EvalItem, _Raw]] = []
    for entry in resolved:
        if entry is None:
            continue
        r, task, cat = entry
        if not keep(task, cat):
            continue
        item = _make_item(r, task, cat, window, context, issues, history_of.get(id(r), []), prompts)
        if item is not None:
            out.append((item, r))
    return out


def _make_item(
    r: _Raw,
    task: str,
    cat: str,
    window: float | None,
    context: float | None,
    issues: DataIssues,
    history: list[SQATurn],
    prompts: str = "official",
) -> EvalItem | None:
    q = r.q
    question = str(q.get("question") or "").strip()
    if not question:
        issues.skip("empty_question", r.where)
        return None
    t = parse_timestamp(q.get("time_stamp"), issues, r.where)
    if prompts == "published" and t is not None:
        t = published_time_stamp(q.get("time_stamp"))  # int() per field; raises (None) on "1:02.5"
    if t is None:
        issues.skip("bad_timestamp", f"{r.where}: time_stamp {q.get('time_stamp')!r}")
        return None
    meta: dict[str, Any] = {
        "time_stamp": str(q.get("time_stamp", "")).strip(),
        "context": context,
        "question": question,
        "source": r.source,
        "layout": r.layout,
        "task_abbr": TASK_ABBR.get(task),
    }
    meta.update(r.extra)
    for k in ("required_ability", "frames_required", "temporal_clue_type", "video_categories"):
        if q.get(k) not in (None, ""):
            meta[k] = q[k]

    if task == PO:
        gt_raw = q.get("ground_truth_time_stamp")
        gt = parse_timestamp(gt_raw, issues, r.where)
        if gt is None:
            issues.skip("bad_timestamp", f"{r.where}: ground_truth_time_stamp {gt_raw!r}")
            return None
        expected = str(q.get("ground_truth_output") or "").strip()
        if not expected:
            issues.skip("bad_answer", f"{r.where}: no ground_truth_output")
            return None
        if gt < t:
            issues.warn("gt_before_question", f"{r.where}: ground truth {gt:g} s < asked {t:g} s")
        polls, k = [], 1
        while t + k <= gt + 4 + 1e-9:
            polls.append(t + k)
            k += 1
        if not polls:
            issues.skip("no_poll_window", f"{r.where}: nothing to poll after {t:g} s")
            return None
        poll_prompt = build_proactive_poll_prompt(question, expected)
        meta.update(
            {
                "gt_time": gt,
                "gt_time_stamp": str(gt_raw).strip(),
                "poll_times": polls,
                "poll_query": (
                    f'{question} Is it the right time to output "{expected}"? '
                    "You can only answer yes or no."
                ),
                "final_prompt": build_proactive_final_prompt(question),
            }
        )
        return EvalItem(
            benchmark=BENCHMARK,
            uid=r.uid,
            task=task,
            category=cat,
            video=r.video,
            query_time=t,
            clip_start=t,
            clip_end=polls[-1],
            prompt=poll_prompt,
            kind="proactive",
            gold=expected,
            options=(),
            meta=meta,
        )

    options = _normalise_options(q.get("options"), issues, r.where)
    if options is None:
        return None
    gold = _gold_letter(q.get("answer"), len(options), issues, r.where)
    if gold is None:
        return None
    start = max(0.0, t - window) if window is not None else 0.0
    if task == SQA:
        prompt = build_sqa_prompt(question, options, history)
        meta["history"] = len(history)
        kind = "sqa"
    elif prompts == "published":
        prompt = build_published_prompt(q.get("question"), q.get("options"))
        kind = "mcq"
    else:
        prompt = build_mcq_prompt(question, options)
        kind = "mcq"
    return EvalItem(
        benchmark=BENCHMARK,
        uid=r.uid,
        task=task,
        category=cat,
        video=r.video,
        query_time=t,
        clip_start=start,
        clip_end=t,
        prompt=prompt,
        kind=kind,
        gold=gold,
        options=options,
        meta=meta,
    )


def load_streamingbench(
    path: str | os.PathLike,
    context: float | None = 60.0,
    tasks: Iterable[str] | None = None,
    issues: DataIssues | None = None,
    *,
    video_prefix: str = "",
    prompts: str = "official",
) -> list[EvalItem]:
    """StreamingBench questions as :class:`EvalItem` s, in file order.

    ``path``: a JSON file of the benchmark's repo, a CSV file of the dataset card, or a
    directory of such files. ``context``: seconds of video before the question the model may see
    (``None`` or ``<= 0``: all of it). ``tasks``: task names, abbreviations or category names to
    keep. ``issues`` collects every repaired or skipped value. ``video_prefix`` is prepended to
    every video path (e.g. the category's folder for CSV layouts). ``prompts="published"``:
    multiple-choice questions get the published FluxMem prompt (:func:`build_published_prompt`)
    and the published reading of ``time_stamp`` (:func:`~fluxmem.eval.protocol.published_time_stamp`).
    """
    iss = _issues(issues)
    return [item for item, _ in _load(path, context, tasks, iss, video_prefix, prompts)]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def official_letter(reply: Any) -> str | None:
    """The official reading of a reply: its first character, as is."""
    return reply[0] if isinstance(reply, str) and reply else None


class ProactiveResult(NamedTuple):
    """Verdict on one proactive dialog."""

    t_yes: float | None  # time of the first "yes"; None if the model never said it
    time_ok: bool  # |t_yes - gt| <= 2 s
    answer_ok: bool  # expected output is a substring of the final reply (case-sensitive)
    answer_ok_robust: bool  # same, ignoring case and runs of white space
    answer: str | None  # the final reply

    @property
    def correct(self) -> bool:
        """Official: timing and answer both right."""
        return self.time_ok and self.answer_ok

    @property
    def correct_robust(self) -> bool:
        return self.time_ok and self.answer_ok_robust


def _dialog_turns(dialog: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(dialog, str):
        try:
            dialog = json.loads(dialog)
        except json.JSONDecodeError:
            return None
    if isinstance(dialog, Mapping):
        dialog = dialog.get("dialog_history")
    if not isinstance(dialog, list):
        return None
    return [t for t in dialog if isinstance(t, Mapping)]


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().casefold()


def score_proactive_dialog(
    dialog: Any, gt_time: float, expected: str, *, window: float = 2.0
) -> ProactiveResult:
    """Score a polling dialog (official history format, or ``{"dialog_history": [...]}``).

    ``t_yes`` is the time of the first assistant turn that says yes (:func:`proactive_says_yes`);
    the final reply is the next assistant turn. Timing is right iff ``|t_yes - gt_time| <=
    window`` (2 s: exactly 2 passes, 2.5 fails). A dialog without a "yes" is wrong.
    """
    turns = _dialog_turns(dialog) or []
    assistant = [t for t in turns if t.get("role") == "assistant"]
    t_yes, answer = None, None
    for i, turn in enumerate(assistant):
        if proactive_says_yes(turn.get("content")):
            try:
                t_yes = float(turn.get("time"))
            except (TypeError, ValueError):
                t_yes = None
            if i + 1 < len(assistant):
                c = assistant[i + 1].get("content")
                answer = c if isinstance(c, str) else None
            break
    time_ok = t_yes is not None and abs(t_yes - float(gt_time)) <= window + 1e-9
    answer_ok = answer is not None and expected in answer
    answer_ok_robust = answer is not None and _squash(expected) in _squash(answer)
    return ProactiveResult(t_yes, time_ok, answer_ok, answer_ok_robust, answer)


def score_reply(item: EvalItem, reply: Any) -> ReplyScore:
    """Official and robust verdicts on one reply (a dialog for proactive items).

    Official: first character equals the gold letter; an empty Sequential-QA reply is left out
    (``None``). Robust: :func:`~fluxmem.eval.common.robust_letter`; empty replies are wrong.
    """
    if item.kind == "proactive":
        res = score_proactive_dialog(reply, item.meta["gt_time"], item.gold)
        return ReplyScore(res.correct, res.correct_robust)
    text = reply if isinstance(reply, str) else ""
    if item.kind == "sqa" and not text:
        official = None
    else:
        official = official_letter(text) == item.gold
    robust = robust_letter(text, len(item.options) or 7) == item.gold
    return ReplyScore(official, robust)


def _reply_of(item: EvalItem, rec: Mapping[str, Any]) -> Any:
    if item.kind == "proactive":
        for k in ("response", "dialog", "dialog_history"):
            if rec.get(k) is not None:
                return rec[k] if k != "dialog_history" else {"dialog_history": rec[k]}
        return None
    return rec.get("response")


def contextual_score(task_acc: Mapping[str, float]) -> float | None:
    """(250·MCU + 250·ACU + 250·SQA + 51·PO)/801 over the tasks present (``None`` if none)."""
    ws = {t: w for t, w in CONTEXTUAL_WEIGHTS.items() if t in task_acc}
    if not ws:
        return None
    return sum(w * task_acc[t] for t, w in ws.items()) / sum(ws.values())


def streamingbench_overall(category_acc: Mapping[str, float]) -> float | None:
    """(2500·RTVU + 1000·Omni + 801·Contextual)/4301 over the categories present."""
    ws = {c: w for c, w in CATEGORY_WEIGHTS.items() if c in category_acc}
    if not ws:
        return None
    return sum(w * category_acc[c] for c, w in ws.items()) / sum(ws.values())


def _aggregate(tally: Tally, task_cat: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    tasks = tally.accuracy()
    cats: dict[str, float] = {}
    cat_counts: dict[str, int] = {}
    notes: list[str] = []
    for cat in list(CATEGORY_WEIGHTS) + sorted(set(task_cat.values()) - set(CATEGORY_WEIGHTS)):
        present = [t for t in tasks if task_cat.get(t) == cat]
        if not present:
            continue
        cat_counts[cat] = sum(tally.counted[t] for t in present)
        if cat == CONTEXTUAL:
            known = {t: tasks[t] for t in present if t in CONTEXTUAL_WEIGHTS}
            unknown = [t for t in present if t not in CONTEXTUAL_WEIGHTS]
            num = sum(CONTEXTUAL_WEIGHTS[t] * a for t, a in known.items())
            den = sum(CONTEXTUAL_WEIGHTS[t] for t in known)
            for t in unknown:  # weighted by their own count
                num += tally.counted[t] * tasks[t]
                den += tally.counted[t]
            cats[cat] = num / den
            missing = [TASK_ABBR[t] for t in CONTEXTUAL_WEIGHTS if t not in known]
            if missing:
                notes.append(
                    f"{CONTEXTUAL}: weighted formula over the tasks present only "
                    f"(absent: {', '.join(missing)})"
                )
        else:
            cats[cat] = 100.0 * sum(tally.correct[t] for t in present) / cat_counts[cat]
            expected = [n for n, _, _ in TASKS.get(cat, ())]
            missing = [TASK_ABBR[t] for t in expected if t not in present]
            if missing:
                notes.append(f"{cat}: micro accuracy over the subtasks present (absent: "
                             f"{', '.join(missing)})")
    overall = streamingbench_overall(cats)
    absent = [c for c in CATEGORY_WEIGHTS if c not in cats]
    if absent and cats:
        notes.append(
            "Overall: (2500·RTVU + 1000·Omni + 801·Contextual)/4301 over the categories present "
            f"only (absent: {', '.join(absent)})"
        )
    col = column_dict(
        tasks, cats, overall, dict(tally.counted), cat_counts, dict(tally.skipped)
    )
    return col, notes


def score_streamingbench(
    items: Sequence[EvalItem],
    answers: Any,
    issues: DataIssues | None = None,
) -> dict[str, Any]:
    """Score answers against items.

    ``answers``: an answers-file path, ``{uid: record}``, or records with ``uid`` and
    ``response`` (the reply string; for proactive items the dialog list, also accepted under
    ``dialog``/``dialog_history``). A record with ``skipped`` (see
    :func:`~fluxmem.eval.common.skip_record`) counts under that reason; a missing record under
    ``no_reply``; ``response: null`` under ``no_response``. Items skipped while loading (in
    ``issues.skipped``) are added to ``skipped``.

    Returns ``{"tasks", "categories", "overall", "counted", "skipped"}`` (official, percent),
    the same under ``"robust"``, plus ``"notes"``, ``"extra"`` (proactive time-only accuracy),
    ``"settings"`` (context) and ``"task_categories"``.
    """
    iss = _issues(issues)
    amap = as_answer_map(answers, iss)
    off, rob, pub = Tally(), Tally(), Tally()
    task_cat: dict[str, str] = {}
    po_time = Tally()
    uids = set()
    for item in items:
        uids.add(item.uid)
        task_cat[item.task] = item.category
        rec = amap.get(item.uid)
        if rec is None:
            for col in (off, rob, pub):
                col.skip("no_reply")
            continue
        if rec.get("skipped"):
            reason = str(rec["skipped"])
            for col in (off, rob, pub):
                col.skip(reason)
            continue
        reply = _reply_of(item, rec)
        if reply is None:
            for col in (off, rob, pub):
                col.skip("no_response")
            continue
        verdict = score_reply(item, reply)
        if verdict.official is None:
            off.skip("sqa_empty_reply")
        else:
            off.add(item.task, verdict.official)
        rob.add(item.task, bool(verdict.robust))
        if item.kind == "mcq":
            pub.add(item.task, published_letter(reply) == item.gold)
        elif verdict.official is None:
            pub.skip("sqa_empty_reply")
        else:
            pub.add(item.task, verdict.official)
        if item.kind == "proactive":
            res = score_proactive_dialog(reply, item.meta["gt_time"], item.gold)
            po_time.add(item.task, res.time_ok)
    extra_uids = [u for u in amap if u not in uids]
    if extra_uids:
        iss.warn("answer_without_item", f"{len(extra_uids)} answers match no item, e.g. "
                 f"{extra_uids[0]!r}")
    for reason, n in iss.skipped.items():
        for col in (off, rob, pub):
            col.skip(reason, n)
    scores, notes = _aggregate(off, task_cat)
    robust, robust_notes = _aggregate(rob, task_cat)
    notes = merge_notes(notes, robust_notes)
    scores["robust"] = robust
    scores["published"], _ = _aggregate(pub, task_cat)
    contexts = sorted({repr(i.meta.get("context")) for i in items})
    scores["settings"] = {
        "benchmark": BENCHMARK,
        "context": items[0].meta.get("context") if len(contexts) == 1 and items else None,
    }
    extra: dict[str, Any] = {}
    if po_time.counted:
        extra["proactive_time_accuracy"] = po_time.accuracy().get(PO)
    scores["extra"] = extra
    scores["task_categories"] = task_cat
    notes.append(
        "official: first character of the reply must be the letter (case-sensitive); empty "
        "Sequential-QA replies left out. robust: first standalone option letter; empty replies "
        "wrong. published: the published FluxMem evaluation's regex chain (multiple choice; other "
        "tasks as official)."
    )
    if po_time.counted:
        notes.append(
            "Proactive Output correct = timing within 2 s AND expected output in the reply; "
            f"timing alone: {extra['proactive_time_accuracy']:.2f}"
        )
    scores["notes"] = notes
    return scores


#: Fields of the annotations themselves (anything else in a question is a model's reply field).
_ANNOTATION_FIELDS = {
    "task_type", "question", "time_stamp", "answer", "options", "required_ability", "question_id",
    "frames_required", "temporal_clue_type", "ground_truth_time_stamp", "ground_truth_output",
    "video_categories", "time", "video_path",
}


def score_streamingbench_field(
    annotations_path: str | os.PathLike,
    field: str,
    *,
    context: float | None = 60.0,
    tasks: Iterable[str] | None = None,
    issues: DataIssues | None = None,
) -> dict[str, Any]:
    """Score replies stored the benchmark's own way: in each question, a field named after the
    model holding the reply string, or for proactive items ``{"answered": t | false,
    "dialog_history": [...]}`` (JSON text in a CSV column). Questions without the field count
    under ``no_reply``."""
    iss = _issues(issues)
    pairs = _load(annotations_path, context, tasks, iss)
    if pairs and not any(field in raw.q for _, raw in pairs):
        present = sorted({k for _, raw in pairs for k in raw.q} - _ANNOTATION_FIELDS)
        raise ConfigError(
            f"no question in {annotations_path} holds the field {field!r}; reply fields found: "
            f"{', '.join(present) if present else 'none (the file holds annotations only)'}."
        )
    answers: dict[str, dict[str, Any]] = {}
    for item, raw in pairs:
        if field not in raw.q:
            continue
        value = raw.q[field]
        if raw.layout == "csv" and item.kind == "proactive" and isinstance(value, str):
            value = _dialog_turns(value)
        answers[item.uid] = {"uid": item.uid, "response": value}
    return score_streamingbench([i for i, _ in pairs], answers, iss)


def streamingbench_table(scores: Mapping[str, Any], title: str = "StreamingBench",
                         columns: Sequence[str] | None = None) -> ScoreTable:
    """Official, robust (and published, when scored) columns side by side, tasks grouped under
    their categories. ``columns``: which, in order (default: those present)."""
    groups = {cat: [n for n, _, _ in ts] for cat, ts in TASKS.items()}
    labels = {n: f"{n} ({a})" for n, a in TASK_ABBR.items()}
    notes = []
    ctx = scores.get("settings", {}).get("context")
    if "settings" in scores:
        notes.append(f"context: {ctx if ctx is not None else 'all'} s before each question")
    if columns is None:
        columns = ("official", "robust") + (("published",) if "published" in scores else ())
    return table_from_scores(title, scores, groups, labels=labels, notes=notes, columns=columns)


# --------------------------------------------------------------------------------------------
# The benchmark object
# --------------------------------------------------------------------------------------------

from .benchmark import Benchmark, Turn, register
from .protocol import STREAMING_SETTINGS, Protocol


@register
class StreamingBench(Benchmark):
    """StreamingBench through the :class:`~fluxmem.eval.benchmark.Benchmark` interface."""

    name = BENCHMARK
    title = "StreamingBench"
    help = "StreamingBench (JSON or CSV annotations; real-time windows)"

    def protocol(self, name: str) -> Protocol:
        common = {"benchmark": BENCHMARK, **STREAMING_SETTINGS}
        if name == "published":
            return Protocol(name=name, prompts="published", frames="published", context=256.0, min_frames=2,
                            past_end="published", scoring=("published", "official", "robust"), **common)
        if name == "official":
            return Protocol(name=name, prompts="official", frames="end_anchored", context=60.0,
                            scoring=("official", "robust", "published"), **common)
        return Protocol(name="fluxmem", prompts="official", frames="end_anchored", context=256.0,
                        scoring=("official", "robust", "published"), **common)

    def load(self, annotations, protocol, *, tasks=None, issues=None, video_prefix=""):
        return load_streamingbench(annotations, context=protocol.context, tasks=tasks, issues=issues,
                                   video_prefix=video_prefix, prompts=protocol.prompts)

    def first_turn(self, item: EvalItem) -> Turn:
        if item.kind == "proactive":
            return proactive_next_turn(item, [])
        return Turn(item.clip_start, item.clip_end, item.prompt)

    def next_turn(self, item, replies):
        return proactive_next_turn(item, replies) if item.kind == "proactive" else None

    def response(self, item, replies, costs):
        if item.kind == "proactive":
            return proactive_dialog(item, replies, costs)
        return replies[-1][1] if replies else None

    def extract(self, item, response):
        if item.kind == "proactive":
            res = score_proactive_dialog(response, item.meta["gt_time"], item.gold)
            return {"t_yes": res.t_yes, "answer": res.answer}
        out = {"official": official_letter(response), "robust": robust_letter(response, len(item.options) or 7)}
        if item.kind == "mcq":
            out["published"] = published_letter(response) or None
        return out

    def verdict(self, item, response):
        v = score_reply(item, response)
        out = {"official": v.official, "robust": bool(v.robust)}
        if item.kind == "mcq":
            out["published"] = published_letter(response) == item.gold
        return out

    def score(self, items, answers, issues=None, protocol=None):
        scores = score_streamingbench(items, answers, issues)
        scores["columns"] = list(self.columns(protocol))
        scores["task_abbreviations"] = {t: TASK_ABBR.get(t, t) for t in scores["task_categories"]}
        return scores

    def aggregate(self, tally, task_categories):
        return _aggregate(tally, task_categories)[0]

    def table(self, scores):
        return streamingbench_table(scores, columns=scores.get("columns"))

    def score_replies(self, annotations, *, replies, field, context, tasks, issues):
        if replies:
            raise ConfigError("fluxmem score streamingbench reads the replies from the annotations (--field NAME); "
                              "--replies is for ovobench.")
        if not field:
            raise ConfigError("fluxmem score streamingbench needs --field NAME (the model's reply field).")
        scores = score_streamingbench_field(annotations, field, context=context, tasks=tasks, issues=issues)
        scores["task_abbreviations"] = {t: TASK_ABBR.get(t, t) for t in scores["task_categories"]}
        return scores
