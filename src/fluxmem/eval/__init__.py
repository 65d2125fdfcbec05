"""Evaluation: benchmark data, prompts and scoring (model-free), for the runner to build on.

``common`` holds the normalised :class:`EvalItem`, data-issue counting, timestamps, answers files
and score tables; ``streamingbench`` and ``ovobench`` each hold one benchmark's loader, prompts
and official/robust scorers.
"""

from .common import (
    DataIssues,
    EvalItem,
    ReplyScore,
    ScoreTable,
    answer_record,
    append_jsonl,
    dedupe_by_uid,
    fit_to_duration,
    format_timestamp,
    load_answers,
    parse_timestamp,
    pending_items,
    read_jsonl,
    robust_letter,
    shard_items,
    skip_record,
)
from .ovobench import load_ovobench, ovobench_table, score_ovobench, score_ovobench_replies
from .streamingbench import (
    load_streamingbench,
    run_proactive_dialog,
    score_proactive_dialog,
    score_streamingbench,
    score_streamingbench_field,
    streamingbench_table,
)

__all__ = [
    "DataIssues",
    "EvalItem",
    "ReplyScore",
    "ScoreTable",
    "answer_record",
    "append_jsonl",
    "dedupe_by_uid",
    "fit_to_duration",
    "format_timestamp",
    "load_answers",
    "load_ovobench",
    "load_streamingbench",
    "ovobench_table",
    "parse_timestamp",
    "pending_items",
    "read_jsonl",
    "robust_letter",
    "run_proactive_dialog",
    "score_ovobench",
    "score_ovobench_replies",
    "score_proactive_dialog",
    "score_streamingbench",
    "score_streamingbench_field",
    "shard_items",
    "skip_record",
    "streamingbench_table",
]
