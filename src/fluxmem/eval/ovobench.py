"""OVO-Bench (v2 annotations): loading, prompts and scoring (``shared/spec/benchmarks.md``).

Reproduces the offline protocol of the benchmark's public code (JoeLeelyf/OVO-Bench:
``utils/OVOBench.py`` for prompts and clipping, ``utils/OVOBenchScore.py`` for scoring) in our
own code, with a strict column beside the official one.

* Entries: backward (EPM, ASI, HLD) and real-time (STU, OJR, ATR, ACR, OCR, FPD) multiple-choice
  ``{id, task, video, realtime, question, answer, options, gt}``; forward REC ``{activity,
  test_info: [{realtime, count}]}``, SSR ``{tutorial, all_steps, test_info: [{realtime, step,
  type}]}``, CRR ``{question, answer, ask_time, clue_time, test_info: [{realtime, type}]}``. Each
  forward probe is its own :class:`~fluxmem.eval.common.EvalItem` (``uid = f"{id}#probe{k}"``).
* Clip: ``[0, ceil(realtime)]``, capped at the video's length by the runner
  (:func:`~fluxmem.eval.common.fit_to_duration`). Multiple-choice entries are clipped too (the
  official self-chunking script skips them by mistake; we do not).
* Prompts: the official strings (``OFFICIAL_TEMPLATES``), or the published FluxMem evaluation's
  (``PUBLISHED_TEMPLATES``, its own indentation and quotes) under ``--protocol published``.
* Official scoring (case-sensitive throughout, ``None`` replies wrong):
  MCQ correct iff the gold letter occurs ANYWHERE in the reply (``gt in response``: "A lot of B"
  counts for A); REC iff all digit runs of the reply joined equal the count ("1 and 2" → "12");
  SSR/CRR iff the reply is exactly "Y"/"N" matching, or contains "Yes" (type 1) / "No" (type 0).
* Strict column: MCQ the first standalone option letter (:func:`~fluxmem.eval.common.
  robust_letter`); REC the first number (digits or an English number word); SSR/CRR the first
  word, case-insensitive, must be yes/y or no/n.
* Aggregation: forward tasks pool all their probes; a category is the mean of its tasks; Overall
  is the mean of the three categories (over those present), which is what the official scorer
  prints as "Total Avg.". ``extra["task_mean"]`` is the plain mean over the tasks, for reference
  only (not a figure any official script prints).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
    check_replies_file,
    column_dict,
    dedupe_by_uid,
    iter_jsonl,
    merge_notes,
    parse_timestamp,
    robust_letter,
    table_from_scores,
)

BENCHMARK = "ovobench"

BACKWARD_TASKS = ("EPM", "ASI", "HLD")
REALTIME_TASKS = ("STU", "OJR", "ATR", "ACR", "OCR", "FPD")
FORWARD_TASKS = ("REC", "SSR", "CRR")
CATEGORIES = {"backward": BACKWARD_TASKS, "realtime": REALTIME_TASKS, "forward": FORWARD_TASKS}
CATEGORY_NAMES = {
    "backward": "Backward Active Tracing",
    "realtime": "Real-Time Visual Perception",
    "forward": "Forward Active Responding",
}
TASK_CATEGORY = {t: c for c, ts in CATEGORIES.items() for t in ts}
MCQ_TASKS = BACKWARD_TASKS + REALTIME_TASKS

# ---------------------------------------------------------------------------------- prompts

#: The official prompt strings (``constant.py`` of the benchmark's code): a leading newline, a
#: blank line before "Respond", trailing spaces and curly quotes as written there.
OFFICIAL_TEMPLATES = {
    "MCQ": (
        "\nQuestion: {question}\nOptions:\n{options}\n\nRespond only with the letter corresponding to your "
        "chosen option (e.g., A, B, C). \nDo not include any additional text or explanation in your response.\n"
    ),
    "REC": (
        "\nYou're watching a video in which people may perform a certain type of action repetively. \n"
        "The person performing this kind of action are referred to as 'they' in the following statement.\n"
        "You're task is to count how many times have different people in the video perform this kind of action "
        "in total.\nOne complete motion counts as one. \nNow, answer the following question: How many times did "
        "they {activity}?\nProvide your answer as a single number (e.g., 0, 1, 2, 3\u2026) indicating the total "
        "count.\nDo not include any additional text or explanation in your response.\n"
    ),
    "SSR": (
        "\nYou're watching a tutorial video which contain a sequential of steps. \nThe following is one step "
        "from the whole procedures: \n{step}\nYour task is to determine if the man or woman in the video is "
        "currently performing this step.\nAnswer only with \u201cYes\u201d or \u201cNo\u201d.\nDo not include any "
        "additional text or explanation in your response.\n"
    ),
    "CRR": (
        "\nYou're responsible of answering questions based on the video content. \nThe following question are "
        "relevant to the latest frames, i.e. the end of the video.\n{question}\nDecide whether existing visual "
        "content, especially latest frames, i.e. frames that near the end of the video, provide enough "
        "information for answering the question.\nAnswer only with \u201cYes\u201d or \u201cNo\u201d.\nDo not "
        "include any additional text or explanation in your response.\n"
    ),
}

_IND = "\n" + " " * 12
#: The published FluxMem evaluation's strings: the official words re-indented by 12 spaces, a
#: leading newline (REC: a space first), straight quotes, no blank line before "Respond", and a
#: closing newline plus 8 spaces.
PUBLISHED_TEMPLATES = {
    "MCQ": (
        f"{_IND}Question: {{question}}{_IND}Options:{_IND}{{options}}{_IND}Respond only with the letter "
        f"corresponding to your chosen option (e.g., A, B, C). {_IND}Do not include any additional text or "
        "explanation in your response.\n        "
    ),
    "REC": (
        f" {_IND}You're watching a video in which people may perform a certain type of action repetively. "
        f"{_IND}The person performing this kind of action are referred to as 'they' in the following statement."
        f"{_IND}You're task is to count how many times have different people in the video perform this kind of "
        f"action in total.{_IND}One complete motion counts as one. {_IND}Now, answer the following question: How "
        f"many times did they {{activity}}?{_IND}Provide your answer as a single number (e.g., 0, 1, 2, 3\u2026) "
        f"indicating the total count.{_IND}Do not include any additional text or explanation in your response."
        "\n        "
    ),
    "SSR": (
        f"{_IND}You're watching a tutorial video which contain a sequential of steps. {_IND}The following is one "
        f"step from the whole procedures: {_IND}{{step}}{_IND}Your task is to determine if the man or woman in the "
        f"video is currently performing this step.{_IND}Answer only with \"Yes\" or \"No\".{_IND}Do not include "
        "any additional text or explanation in your response.\n        "
    ),
    "CRR": (
        f"{_IND}You're responsible of answering questions based on the video content. {_IND}The following "
        f"question are relevant to the latest frames, i.e. the end of the video.{_IND}{{question}}{_IND}Decide "
        "whether existing visual content, especially latest frames, i.e. frames that near the end of the video, "
        f"provide enough information for answering the question.{_IND}Answer only with \"Yes\" or \"No\"."
        f"{_IND}Do not include any additional text or explanation in your response.\n        "
    ),
}

TEMPLATES = {"official": OFFICIAL_TEMPLATES, "published": PUBLISHED_TEMPLATES}


def _templates(prompts: str) -> Mapping[str, str]:
    try:
        return TEMPLATES[prompts]
    except KeyError:
        raise ConfigError(f"OVO-Bench prompts must be one of {', '.join(TEMPLATES)}, got {prompts!r}") from None


def format_options(options: Sequence[str]) -> str:
    """``"A. x; B. y; C. z;"`` - the one-line option list (options verbatim)."""
    return "; ".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options)) + ";"


def build_mcq_prompt(question: str, options: Sequence[str], prompts: str = "official") -> str:
    """Backward and real-time multiple-choice prompt (question and options verbatim)."""
    return _templates(prompts)["MCQ"].format(question=question, options=format_options(options))


def build_rec_prompt(activity: str, prompts: str = "official") -> str:
    """REC: how many times did they ``activity``, as a single number."""
    return _templates(prompts)["REC"].format(activity=activity)


def build_ssr_prompt(step: str, prompts: str = "official") -> str:
    """SSR: is the person currently performing ``step``, Yes/No."""
    return _templates(prompts)["SSR"].format(step=step)


def build_crr_prompt(question: str, prompts: str = "official") -> str:
    """CRR: is the visible content now enough to answer ``question``, Yes/No."""
    return _templates(prompts)["CRR"].format(question=question)


# ---------------------------------------------------------------------------------- loading


def _task_filter(tasks: Iterable[str] | None) -> set[str]:
    if tasks is None:
        return set(TASK_CATEGORY)
    if isinstance(tasks, str):
        tasks = [tasks]
    out: set[str] = set()
    for t in tasks:
        key = str(t).strip()
        if key.upper() in TASK_CATEGORY:
            out.add(key.upper())
        elif key.lower() in CATEGORIES:
            out.update(CATEGORIES[key.lower()])
        else:
            match = [c for c, n in CATEGORY_NAMES.items() if n.lower() == key.lower()]
            if not match:
                raise ConfigError(
                    f"unknown OVO-Bench task {t!r}; use {', '.join(TASK_CATEGORY)} or "
                    f"{', '.join(CATEGORIES)}"
                )
            out.update(CATEGORIES[match[0]])
    return out


def _read_annotations(path: str | os.PathLike) -> list[Any]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"OVO-Bench annotations {p} do not exist; check the path")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read OVO-Bench annotations {p}: {e}") from e
    if isinstance(data, Mapping):  # {"backward": [...], "realtime": [...], "forward": [...]}
        merged: list[Any] = []
        for key in ("backward", "realtime", "forward"):
            merged.extend(data.get(key) or [])
        data = merged
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a list of entries, got {type(data).__name__}")
    return data


def _clip_end(t: float) -> float:
    return float(math.ceil(t - 1e-9))


def _meta(entry: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: entry[k] for k in keys if k in entry}


def load_ovobench(
    path: str | os.PathLike,
    tasks: Iterable[str] | None = None,
    issues: DataIssues | None = None,
    *,
    prompts: str = "official",
) -> list[EvalItem]:
    """OVO-Bench v2 entries as :class:`EvalItem` s (one per MCQ entry, one per forward probe).

    ``tasks``: abbreviations (``"EPM"``) or categories (``"backward"``, ``"realtime"``,
    ``"forward"``) to keep. ``prompts``: ``"official"`` (the benchmark's strings) or
    ``"published"`` (the published FluxMem evaluation's). Questions, options, activities and steps
    go into the prompts verbatim, as both codes do (trailing spaces and inner newlines kept). Entries or probes with unusable fields are skipped and counted in
    ``issues``; a file that cannot be read at all raises :class:`~fluxmem.errors.InputError`.
    """
    iss = _issues(issues)
    keep = _task_filter(tasks)
    items: list[EvalItem] = []
    seen_ids: dict[str, int] = {}
    for i, entry in enumerate(_read_annotations(path)):
        where = f"entry[{i}]"
        if not isinstance(entry, Mapping):
            iss.skip("bad_entry", f"{where}: not an object")
            continue
        task = str(entry.get("task", "")).strip().upper()
        if task not in TASK_CATEGORY:
            iss.skip("unknown_task", f"{where}: task {entry.get('task')!r}")
            continue
        if task not in keep:
            continue
        raw_id = entry.get("id")
        if raw_id is None or str(raw_id).strip() == "":
            iss.skip("bad_entry", f"{where}: no id")
            continue
        eid = str(raw_id).strip()
        n = seen_ids.get(eid, 0) + 1
        seen_ids[eid] = n
        if n > 1:
            iss.warn("duplicate_id", f"{where}: id {eid}")
            eid = f"{eid}~{n}"
        where = f"{where} (id {raw_id}, {task})"
        video = str(entry.get("video") or "").strip()
        if not video:
            iss.skip("bad_entry", f"{where}: no video")
            continue
        if task in MCQ_TASKS:
            item = _mcq_item(entry, eid, task, video, where, iss, prompts)
            if item is not None:
                items.append(item)
        else:
            items.extend(_forward_items(entry, eid, task, video, where, iss, prompts))
    return items


def _mcq_item(
    entry: Mapping[str, Any], eid: str, task: str, video: str, where: str, iss: DataIssues, prompts: str
) -> EvalItem | None:
    question = str(entry.get("question") or "").strip()
    options = entry.get("options")
    if not question:
        iss.skip("empty_question", where)
        return None
    if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(LETTERS):
        iss.skip("bad_options", f"{where}: options {options!r:.60}")
        return None
    options = [str(o).strip() for o in options]
    if len(options) > 5:
        iss.warn("options_over_5", f"{where}: {len(options)} options")
    gt = entry.get("gt")
    if isinstance(gt, bool) or not isinstance(gt, int) or not 0 <= gt < len(options):
        # the index is the official gold; fall back on the answer text if it names one option
        ans = str(entry.get("answer") or "").strip()
        if ans in options and options.count(ans) == 1:
            iss.warn("gt_from_answer", f"{where}: gt {gt!r}, answer text found at "
                     f"{options.index(ans)}")
            gt = options.index(ans)
        else:
            iss.skip("bad_answer", f"{where}: gt {gt!r} with {len(options)} options")
            return None
    ans = entry.get("answer")
    if ans is not None and str(ans).strip() != options[gt]:
        iss.warn("answer_mismatch", f"{where}: answer {ans!r} vs options[gt] {options[gt]!r}")
    t = parse_timestamp(entry.get("realtime"), iss, where)
    if t is None:
        iss.skip("bad_timestamp", f"{where}: realtime {entry.get('realtime')!r}")
        return None
    return EvalItem(
        benchmark=BENCHMARK,
        uid=eid,
        task=task,
        category=TASK_CATEGORY[task],
        video=video,
        query_time=t,
        clip_start=0.0,
        clip_end=_clip_end(t),
        prompt=build_mcq_prompt(str(entry.get("question")), [str(o) for o in entry["options"]], prompts),
        kind="mcq",
        gold=LETTERS[gt],
        options=tuple(options),
        meta={"id": entry.get("id"), "realtime": entry.get("realtime"), "gt": gt,
              "question": question, "answer": ans},
    )


def _forward_items(
    entry: Mapping[str, Any], eid: str, task: str, video: str, where: str, iss: DataIssues, prompts: str
) -> list[EvalItem]:
    probes = entry.get("test_info")
    if not isinstance(probes, list) or not probes:
        iss.skip("bad_entry", f"{where}: no test_info")
        return []
    base_prompt = None
    if task == "REC":
        activity = str(entry.get("activity") or "").strip()
        if not activity:
            iss.skip("bad_entry", f"{where}: no activity", )
            return []
        base_prompt = build_rec_prompt(str(entry.get("activity")), prompts)
        common = _meta(entry, ("activity",))
    elif task == "CRR":
        question = str(entry.get("question") or "").strip()
        if not question:
            iss.skip("empty_question", where)
            return []
        base_prompt = build_crr_prompt(str(entry.get("question")), prompts)
        common = _meta(entry, ("question", "answer", "ask_time", "clue_time"))
    else:
        common = _meta(entry, ("tutorial",))
    items = []
    for k, probe in enumerate(probes):
        pw = f"{where} probe {k}"
        if not isinstance(probe, Mapping):
            iss.skip("bad_probe", f"{pw}: not an object")
            continue
        t = parse_timestamp(probe.get("realtime"), iss, pw)
        if t is None:
            iss.skip("bad_timestamp", f"{pw}: realtime {probe.get('realtime')!r}")
            continue
        if task == "REC":
            count = probe.get("count")
            gold: Any = _as_count(count)
            if gold is None:
                iss.skip("bad_answer", f"{pw}: count {count!r}")
                continue
            prompt, kind = base_prompt, "rec"
        else:
            typ = probe.get("type")
            if isinstance(typ, str) and typ.strip() in ("0", "1"):
                typ = int(typ.strip())
            if isinstance(typ, bool) or typ not in (0, 1):
                iss.skip("bad_answer", f"{pw}: type {typ!r}")
                continue
            gold = "Yes" if typ == 1 else "No"
            if task == "SSR":
                step = str(probe.get("step") or "").strip()
                if not step:
                    iss.skip("bad_probe", f"{pw}: no step")
                    continue
                prompt, kind = build_ssr_prompt(str(probe.get("step")), prompts), "ssr"
            else:
                prompt, kind = base_prompt, "crr"
        meta = dict(common)
        meta.update({"id": entry.get("id"), "probe": k, "realtime": probe.get("realtime")})
        for key in ("step", "type", "count"):
            if key in probe:
                meta[key] = probe[key]
        items.append(
            EvalItem(
                benchmark=BENCHMARK,
                uid=f"{eid}#probe{k}",
                task=task,
                category=TASK_CATEGORY[task],
                video=video,
                query_time=t,
                clip_start=0.0,
                clip_end=_clip_end(t),
                prompt=prompt,
                kind=kind,
                gold=gold,
                options=(),
                meta=meta,
            )
        )
    return items


def _as_count(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


# ---------------------------------------------------------------------------------- scoring


def official_mcq(reply: Any, gold: str) -> bool:
    """Official MCQ rule: the gold letter occurs anywhere in the reply (case-sensitive)."""
    return isinstance(reply, str) and gold in reply


def rec_digits(reply: Any) -> str:
    """All digit runs of the reply joined: ``"I count 1 and 2"`` → ``"12"``."""
    return "".join(re.findall(r"\d+", reply)) if isinstance(reply, str) else ""


def official_rec(reply: Any, count: int) -> bool:
    """Official REC rule: :func:`rec_digits` equals ``str(count)``."""
    return isinstance(reply, str) and rec_digits(reply) == str(count)


def official_yes_no(reply: Any, gold: str) -> bool:
    """Official SSR/CRR rule: exactly ``"Y"``/``"N"``, or ``"Yes"``/``"No"`` in the reply
    (case-sensitive substring)."""
    if not isinstance(reply, str):
        return False
    if reply == gold[0]:  # "Y" for Yes, "N" for No
        return True
    return gold in reply


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
    )
}


def strict_count(reply: Any) -> int | None:
    """The first number in the reply (digits or an English number word up to twenty)."""
    if not isinstance(reply, str):
        return None
    for m in re.finditer(r"\d+|[A-Za-z]+", reply):
        tok = m.group(0)
        if tok.isdigit():
            return int(tok)
        if tok.lower() in _NUMBER_WORDS:
            return _NUMBER_WORDS[tok.lower()]
    return None


def strict_yes_no(reply: Any) -> str | None:
    """``"Yes"``/``"No"`` from the reply's first word (case-insensitive; Y/N too), else None."""
    if not isinstance(reply, str):
        return None
    m = re.match(r"^[\s\"'\u201c\u201d\u2018\u2019*\(\[]*([A-Za-z]+)", reply)
    if not m:
        return None
    w = m.group(1).lower()
    if w in ("yes", "y"):
        return "Yes"
    if w in ("no", "n"):
        return "No"
    return None


def score_reply(item: EvalItem, reply: Any) -> ReplyScore:
    """Official and strict verdicts on one reply."""
    if item.kind == "mcq":
        return ReplyScore(
            official_mcq(reply, item.gold),
            robust_letter(reply, len(item.options)) == item.gold,
        )
    if item.kind == "rec":
        return ReplyScore(official_rec(reply, item.gold), strict_count(reply) == item.gold)
    if item.kind in ("ssr", "crr"):
        return ReplyScore(official_yes_no(reply, item.gold), strict_yes_no(reply) == item.gold)
    raise InputError(f"{item.uid}: kind {item.kind!r} is not an OVO-Bench kind")


def ovobench_aggregate(task_acc: Mapping[str, float]) -> tuple[dict[str, float], float | None]:
    """Category = mean of its tasks present; overall = mean of the categories present."""
    cats = {}
    for cat, ts in CATEGORIES.items():
        present = [task_acc[t] for t in ts if t in task_acc]
        if present:
            cats[cat] = sum(present) / len(present)
    overall = sum(cats.values()) / len(cats) if cats else None
    return cats, overall


def _column(tally: Tally) -> tuple[dict[str, Any], list[str], float | None]:
    tasks = tally.accuracy()
    cats, overall = ovobench_aggregate(tasks)
    counts = {
        c: sum(tally.counted[t] for t in ts if t in tasks) for c, ts in CATEGORIES.items()
        if c in cats
    }
    notes = []
    for c in cats:
        missing = [t for t in CATEGORIES[c] if t not in tasks]
        if missing:
            notes.append(f"{c}: mean over the tasks present (absent: {', '.join(missing)})")
    absent = [c for c in CATEGORIES if c not in cats]
    if absent and cats:
        notes.append(f"Overall: mean over the categories present (absent: {', '.join(absent)})")
    task_mean = sum(tasks.values()) / len(tasks) if tasks else None
    col = column_dict(tasks, cats, overall, dict(tally.counted), counts, dict(tally.skipped))
    return col, notes, task_mean


def score_ovobench(
    items: Sequence[EvalItem], answers: Any, issues: DataIssues | None = None
) -> dict[str, Any]:
    """Score answers (path, ``{uid: record}`` or records with ``uid`` and ``response``).

    Missing records count under ``no_reply``, records with ``skipped`` under their reason, and
    ``response: null`` under ``no_response`` (the official scorer would count these wrong; we
    report them instead). Items skipped while loading (``issues.skipped``) are added too.
    Returns ``{"tasks", "categories", "overall", "counted", "skipped"}`` (official, percent),
    the strict column under ``"robust"``, plus ``"notes"``, ``"extra"`` and ``"settings"``.
    """
    iss = _issues(issues)
    amap = as_answer_map(answers, iss)
    off, rob = Tally(), Tally()
    uids = set()
    for item in items:
        uids.add(item.uid)
        rec = amap.get(item.uid)
        if rec is None:
            off.skip("no_reply")
            rob.skip("no_reply")
            continue
        if rec.get("skipped"):
            off.skip(str(rec["skipped"]))
            rob.skip(str(rec["skipped"]))
            continue
        reply = rec.get("response")
        if reply is None:
            off.skip("no_response")
            rob.skip("no_response")
            continue
        verdict = score_reply(item, reply)
        off.add(item.task, bool(verdict.official))
        rob.add(item.task, bool(verdict.robust))
    extra_uids = [u for u in amap if u not in uids]
    if extra_uids:
        iss.warn("answer_without_item", f"{len(extra_uids)} answers match no item, e.g. "
                 f"{extra_uids[0]!r}")
    for reason, n in iss.skipped.items():
        off.skip(reason, n)
        rob.skip(reason, n)
    scores, notes, task_mean = _column(off)
    robust, robust_notes, robust_task_mean = _column(rob)
    notes = merge_notes(notes, robust_notes)
    scores["robust"] = robust
    scores["extra"] = {"task_mean": task_mean, "robust_task_mean": robust_task_mean}
    scores["settings"] = {"benchmark": BENCHMARK, "clip": "[0, ceil(realtime)]"}
    scores["task_categories"] = dict(TASK_CATEGORY)
    notes.append(
        "official: MCQ gold letter anywhere in the reply; REC digits joined; SSR/CRR Yes/No "
        "substring or exact Y/N (all case-sensitive). robust: first option letter, first "
        "number, first word yes/no."
    )
    notes.append("Overall = mean of the three category means (the official scorer's 'Total Avg.')")
    if task_mean is not None:
        notes.append(f"mean over tasks, for reference only (extra.task_mean, not an official figure): "
                     f"{task_mean:.2f}")
    scores["notes"] = notes
    return scores


def score_ovobench_replies(
    annotations: str | os.PathLike | Sequence[EvalItem],
    replies_jsonl: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    issues: DataIssues | None = None,
) -> dict[str, Any]:
    """Score a replies file of ``{"id": <annotation id>, "response": "..."}`` lines (MCQ) and
    ``{"id": ..., "probe": <index into test_info>, "response": "..."}`` lines (forward probes);
    lines carrying a ``uid`` are taken as is. The first line per question is kept.
    ``annotations``: the annotation file, or items already loaded."""
    iss = _issues(issues)
    check_replies_file(Path(replies_jsonl))
    if isinstance(annotations, (str, os.PathLike)):
        items = load_ovobench(annotations, tasks=tasks, issues=iss)
    else:
        items = list(annotations)
    forward_ids = {str(i.meta.get("id")) for i in items if i.task in FORWARD_TASKS}
    recs = []
    for rec in iter_jsonl(replies_jsonl, iss):
        if rec.get("uid") is None:
            if rec.get("id") is None:
                iss.warn("record_without_uid", str(rec)[:80])
                continue
            eid = str(rec["id"]).strip()
            probe = rec.get("probe")
            if probe is None:
                if eid in forward_ids:
                    iss.warn("probe_missing", f"id {eid}: forward reply without 'probe'")
                    continue
                uid = eid
            else:
                try:
                    uid = f"{eid}#probe{int(probe)}"
                except (TypeError, ValueError):
                    iss.warn("probe_missing", f"id {eid}: probe {probe!r}")
                    continue
            rec = dict(rec, uid=uid)
        recs.append(rec)
    known = {item.uid for item in items}
    if items and not any(str(rec.get("uid")) in known for rec in recs):
        raise InputError(
            f"replies file {str(replies_jsonl)!r} holds no reply to any question of the annotations ({len(recs)} records "
            'read); write one JSON line per question: {"id": ID, "response": "..."}.'
        )
    return score_ovobench(items, dedupe_by_uid(recs, iss), iss)


def ovobench_table(scores: Mapping[str, Any], title: str = "OVO-Bench") -> ScoreTable:
    """Official and strict scores side by side, tasks under their categories."""
    labels = dict(CATEGORY_NAMES)
    return table_from_scores(title, scores, CATEGORIES, labels=labels)


# ---------------------------------------------------------------------------------- the benchmark object

from dataclasses import replace as _replace

from .benchmark import Benchmark, Turn, register
from .protocol import (
    STREAMING_SETTINGS,
    FramePlan,
    Protocol,
    end_anchored_frames,
    moviepy_duration,
    published_frames,
)


@register
class OVOBench(Benchmark):
    """OVO-Bench through the :class:`~fluxmem.eval.benchmark.Benchmark` interface."""

    name = BENCHMARK
    title = "OVO-Bench"
    help = "OVO-Bench v2 (ovo_bench_new.json; each query sees its video up to ceil(realtime))"

    def protocol(self, name: str) -> Protocol:
        common = {"benchmark": BENCHMARK, **STREAMING_SETTINGS, "scoring": ("official", "robust")}
        if name == "published":
            return Protocol(name=name, prompts="published", frames="published", context=256.0, min_frames=4,
                            past_end="published", clips="chunked", **common)
        if name == "official":
            return Protocol(name=name, prompts="official", frames="end_anchored", context=None, **common)
        return Protocol(name="fluxmem", prompts="official", frames="end_anchored", context=256.0, **common)

    def load(self, annotations, protocol, *, tasks=None, issues=None, video_prefix=""):
        items = load_ovobench(annotations, tasks=tasks, issues=issues, prompts=protocol.prompts)
        if video_prefix:
            items = [_replace(i, video=f"{video_prefix.rstrip('/')}/{i.video}") for i in items]
        return items

    def video_path(self, item, videos, protocol):
        if protocol.clips == "chunked":  # the released pre-cut clips, as the published run reads them
            probe = item.meta.get("probe")
            name = f"{item.meta.get('id')}.mp4" if probe is None else f"{item.meta.get('id')}_{probe}.mp4"
            return Path(videos) / "chunked_videos" / name
        return Path(videos) / item.video

    def fit(self, item, protocol, meta, issues):
        if protocol.clips == "chunked":
            return item  # the clip is the window: cut at the video's end when it was made
        fitted = super().fit(item, protocol, meta, issues)
        if fitted is not None and protocol.context:
            fitted = _replace(fitted, clip_start=max(fitted.clip_start, fitted.clip_end - protocol.context))
        return fitted

    def frames(self, item, protocol, meta, turn: Turn) -> FramePlan:
        if protocol.frames == "published":
            if meta.container_us is None:
                return FramePlan([], [], None, (0.0, meta.duration),
                                 "the clip states no container duration (moviepy cannot read it)")
            start = max(0, moviepy_duration(meta.container_us) - (protocol.context or 0.0))
            return published_frames(meta.frames, meta.fps, start, None, min_frames=protocol.min_frames or 4,
                                    max_frames=protocol.max_frames, sample_rate=protocol.fps)
        return end_anchored_frames(meta.frames, meta.fps, turn.start, turn.end, rate=protocol.fps,
                                   max_frames=protocol.max_frames)

    def extract(self, item, response):
        if item.kind == "mcq":  # the official rule: every option letter in the reply
            n = len(item.options) or 7
            official = "".join(ch for ch in LETTERS[:n] if isinstance(response, str) and ch in response)
            return {"official": official or None, "robust": robust_letter(response, n)}
        if item.kind == "rec":
            return {"official": rec_digits(response) or None, "robust": strict_count(response)}
        said = [v for v in ("Yes", "No") if official_yes_no(response, v)]
        return {"official": "/".join(said) or None, "robust": strict_yes_no(response)}

    def verdict(self, item, response):
        v = score_reply(item, response)
        return {"official": bool(v.official), "robust": bool(v.robust)}

    def aggregate(self, tally, task_categories):
        return _column(tally)[0]

    def score(self, items, answers, issues=None, protocol=None):
        scores = score_ovobench(items, answers, issues)
        scores["columns"] = list(self.columns(protocol))
        if protocol is not None and protocol.name == "published":  # its "Overall Avg.": a missing category is 0
            cats = scores.get("categories", {})
            scores["extra"]["published_overall"] = sum(cats.get(c, 0.0) for c in CATEGORIES) / len(CATEGORIES)
            scores["notes"].append("published 'Overall Avg.' (a category not run counts 0): "
                                   f"{scores['extra']['published_overall']:.2f}")
        return scores

    def table(self, scores):
        return ovobench_table(scores)

    def score_replies(self, annotations, *, replies, field, context, tasks, issues):
        if field:
            raise ConfigError("--field is for streamingbench (replies stored inside its annotations); "
                              "fluxmem score ovobench reads --replies FILE.jsonl.")
        if not replies:
            raise ConfigError("fluxmem score ovobench needs --replies FILE.jsonl.")
        return score_ovobench_replies(annotations, replies, tasks=tasks, issues=issues)
