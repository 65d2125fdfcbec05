"""Evaluation: benchmark data, prompts and scoring (model-free), for the runner to build on.

``common`` holds the normalised :class:`EvalItem`, data-issue counting, timestamps, answers files
and score tables; ``benchmark`` the one :class:`Benchmark` interface and its registry;
``protocol`` the named protocols (``published``, ``official``, ``fluxmem``) and the published
frame rule; ``streamingbench`` and ``ovobench`` each one benchmark (loader, prompts, scorers, and
its registered :class:`Benchmark` object); ``dryrun`` the model-free audit of a protocol.
"""

from .benchmark import Benchmark, get_benchmark, register
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
from .ovobench import (
    load_ovobench,
    ovobench_table,
    score_ovobench,
    score_ovobench_replies,
)
from .protocol import Protocol, resolve_protocol
from .streamingbench import (
    load_streamingbench,
    proactive_dialog,
    proactive_next_turn,
    score_proactive_dialog,
    score_streamingbench,
    score_streamingbench_field,
    streamingbench_table,
)

__all__ = [
    "Benchmark",
    "DataIssues",
    "EvalItem",
    "Protocol",
    "ReplyScore",
    "ScoreTable",
    "answer_record",
    "append_jsonl",
    "dedupe_by_uid",
    "fit_to_duration",
    "format_timestamp",
    "get_benchmark",
    "load_answers",
    "load_ovobench",
    "load_streamingbench",
    "ovobench_table",
    "parse_timestamp",
    "pending_items",
    "proactive_dialog",
    "proactive_next_turn",
    "read_jsonl",
    "register",
    "resolve_protocol",
    "robust_letter",
    "score_ovobench",
    "score_ovobench_replies",
    "score_proactive_dialog",
    "score_streamingbench",
    "score_streamingbench_field",
    "shard_items",
    "skip_record",
    "streamingbench_table",
]
