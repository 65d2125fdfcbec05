"""Benchmark runs: StreamingBench and OVO-Bench answered by a model, resumable and shardable.

A run turns the benchmark's questions (:mod:`.streamingbench`, :mod:`.ovobench`) into answers:

* the benchmark (a registered :class:`~fluxmem.eval.benchmark.Benchmark`) and the protocol
  (:mod:`.protocol`: ``published``, ``official`` or ``fluxmem``) decide each query's prompt,
  window and frames (:func:`~fluxmem.eval.dryrun.plan_query`, the dry run's planner); the runner
  decodes exactly those frames and hands them to :func:`fluxmem.inference.answer` with the
  spacing the protocol reports; nothing is re-encoded to disk;
* every answer is appended (and fsynced) to ``answers.jsonl`` as soon as it exists, with the
  prompt, raw reply, extracted answer, correctness, latency and peak memory; a rerun with the same
  ``out`` directory answers only what is missing;
* messy data never stops the run: missing or unreadable videos, questions past the end of their
  video (clamped by default) are written as skip records or warnings and counted;
* under ``torchrun`` / ``accelerate launch`` (``RANK``/``WORLD_SIZE`` set) each process answers
  its shard into ``answers.rank{K}.jsonl``; rank 0 waits for the other shards and merges them;
* at the end :func:`score_run` writes ``scores.json`` and ``scores.md`` (official and robust
  columns side by side). ``fluxmem score DIR`` calls the same function on the files alone.

Files in the output directory: ``run.json`` (package version, model, memory settings, the
protocol's name and every resolved setting, the data issues met while loading), ``items.jsonl`` (the questions, normalised),
``answers.jsonl``, ``scores.json``, ``scores.md``.

Forward-probing tasks (OVO-Bench REC/SSR/CRR probes, StreamingBench proactive polling) are
answered offline, one independent query per probe on its own clip, as the benchmarks define them;
multi-call queries follow the benchmark's ``first_turn``/``next_turn`` steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, VideoError
from ..memories import METHODS, Budget, Memory
from ..memories import get as get_method
from ..memories import parse as parse_method
from ..memories.fluxmem import FluxMem
from ..memory import FluxMemConfig
from ..outputs import check_output, claim_output, output_lock, write_text
from .benchmark import Benchmark, Turn, get_benchmark
from .common import (
    DataIssues,
    EvalItem,
    ScoreTable,
    append_jsonl,
    dedupe_by_uid,
    iter_jsonl,
    shard_items,
    skip_record,
)
from .dryrun import VideoMetaCache, plan_query, plan_turn
from .protocol import (
    DEFAULT_PROTOCOL,
    FramePlan,
    Protocol,
    describe,
    protocol_from_record,
    resolve_protocol,
)

log = logging.getLogger("fluxmem.eval")

ANSWERS = "answers.jsonl"
#: ``run.json``'s ``kind`` in the top folder of a comparison of memory methods.
COMPARISON_KIND = "comparison"
RUN_FILE = "run.json"
ITEMS_FILE = "items.jsonl"
SCORES_JSON = "scores.json"
SCORES_MD = "scores.md"
#: Every name a run (or its dry run) writes in its output directory.
RUN_WRITES = (RUN_FILE, ITEMS_FILE, ANSWERS, "answers.rank*.jsonl", SCORES_JSON, SCORES_MD, "queries.jsonl",
              "dry_run.json")

#: Record fields that change from one run to the next (timings, memory): leave them out when
#: comparing two runs' answers.
VOLATILE_FIELDS = ("latency_ms", "timings_ms", "peak_memory_mb", "peak_memory_kind", "memory_ms")

#: Settings that decide the answers: a rerun into the same directory must match them.
_FINGERPRINT_KEYS = (
    "benchmark", "model", "use_fluxmem", "memory", "method", "budget", "positions", "protocol", "protocol_settings",
    "tasks", "limit", "video_prefix", "items_digest",
)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """Everything that defines a benchmark run (recorded in ``run.json``).

    ``protocol``: a protocol name (``"published"``, ``"official"``, ``"fluxmem"``) or a resolved
    :class:`~fluxmem.eval.protocol.Protocol`; the keyword settings below (``None``: the
    protocol's own value) override it where the protocol allows (``published`` allows none).
    ``context``: seconds of video before each question (``0``: all of the past). ``limit``: at
    most this many questions, balanced across tasks. ``method``: the memory method's spec
    (:mod:`fluxmem.memories`; ``None``: FluxMem with ``memory``), FluxMem's options from
    ``memory`` unless the spec sets them; ``budget``: a token budget (``"match:fluxmem"``,
    ``"0.35"``, ``"1200"``), ``match:`` a FluxMem method meaning FluxMem with ``memory`` too.
    """

    benchmark: str
    annotations: str
    videos: str
    out: str
    model: str = ""
    use_fluxmem: bool = True
    memory: FluxMemConfig = field(default_factory=FluxMemConfig)
    method: str | None = None
    budget: str | None = None
    protocol: Any = DEFAULT_PROTOCOL
    context: float | None = None
    fps: float | None = None
    max_frames: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_new_tokens: int | None = None
    past_end: str | None = None
    repetition_penalty: float | None = None
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    video_prefix: str = ""
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    positions: str = "original"
    """The M-RoPE position rule (``"original"`` or ``"transformers"``, see ``docs/models.md``)."""

    def __post_init__(self) -> None:
        get_benchmark(self.benchmark)  # a clear error for an unknown name
        if self.positions not in ("original", "transformers"):
            raise ConfigError(f"positions must be 'original' or 'transformers', got {self.positions!r}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}.")
        if not isinstance(self.protocol, Protocol):
            resolved = resolve_protocol(
                self.protocol, self.benchmark, context=self.context, fps=self.fps, max_frames=self.max_frames,
                min_pixels=self.min_pixels, max_pixels=self.max_pixels, max_new_tokens=self.max_new_tokens,
                past_end=self.past_end, repetition_penalty=self.repetition_penalty)
            object.__setattr__(self, "protocol", resolved)
        if Path(self.videos).is_file():
            raise InputError(f"--videos {self.videos} is a file; pass the directory the annotations' video paths are relative to.")
        if not Path(self.videos).is_dir():
            raise InputError(f"video directory {self.videos} does not exist; pass --videos DIR.")
        if not Path(self.annotations).exists():
            raise InputError(f"annotations {self.annotations} do not exist; pass --annotations PATH.")
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.use_fluxmem and (self.method is not None or self.budget is not None):
            raise ConfigError("--no-fluxmem runs the unmodified model; drop --memory/--budget, or keep every token "
                              "through the memory path with --memory none.")
        if self.method is not None:
            self.memory_method  # noqa: B018 - an unknown method or option fails now, in one line
        if self.budget is not None:
            object.__setattr__(self, "budget", str(Budget.parse(self.budget)))

    @property
    def memory_method(self) -> Memory | None:
        """The memory method this run answers with (``None`` with FluxMem off)."""
        if not self.use_fluxmem:
            return None
        return with_fluxmem_options(self.method or "fluxmem", self.memory)

    @property
    def memory_budget(self) -> Budget | None:
        """The token budget, ``match:`` a FluxMem method resolved with this run's FluxMem options."""
        return None if self.budget is None else budget_with_fluxmem_options(self.budget, self.memory)

    def for_method(self, method: str, out: str | os.PathLike) -> RunSettings:
        """The same run with another memory method, written to ``out``."""
        return replace(self, method=method, out=str(out))

    @property
    def bench(self) -> Benchmark:
        return get_benchmark(self.benchmark)

    def record(self) -> dict[str, Any]:
        """The settings as plain JSON (memory settings only when the memory is on)."""
        method = self.memory_method
        return {
            "benchmark": self.benchmark,
            "annotations": str(self.annotations),
            "videos": str(self.videos),
            "model": self.model,
            "use_fluxmem": self.use_fluxmem,
            "memory": method.options() if method is not None else None,
            "method": method.spec if method is not None else None,
            "budget": self.budget,
            "positions": self.positions,
            "protocol": self.protocol.name,
            "protocol_settings": self.protocol.record(),
            "tasks": list(self.tasks) if self.tasks is not None else None,
            "limit": self.limit,
            "video_prefix": self.video_prefix,
            "device": self.device,
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
        }


def with_fluxmem_options(spec: str, config: FluxMemConfig) -> Memory:
    """The method of ``spec``; a FluxMem method (FluxMem or an ablation) takes the options of
    ``config`` that its spec does not set."""
    name, options = parse_method(spec)
    if issubclass(METHODS[name], FluxMem):
        options = {**config.to_dict(), **options}
        if name == "fluxmem-fixed" and options.get("pair_sim_threshold") is None:
            options.pop("pair_sim_threshold")
    return get_method(name, **options)


def budget_with_fluxmem_options(budget, config: FluxMemConfig) -> Budget:
    """``budget`` parsed; ``match:`` a FluxMem method matches it with the options of ``config``."""
    budget = Budget.parse(budget)
    if budget.kind == "match":
        return Budget("match", with_fluxmem_options(str(budget.value), config).spec)
    return budget


def load_items(settings: RunSettings, issues: DataIssues) -> list[EvalItem]:
    """The questions of the run, after ``tasks`` and ``limit``."""
    items = settings.bench.load(settings.annotations, settings.protocol, tasks=settings.tasks, issues=issues,
                                video_prefix=settings.video_prefix)
    if settings.limit is not None:
        items = balanced_subset(items, settings.limit)
    if not items:
        raise InputError(
            f"no question to run in {settings.annotations} (tasks {settings.tasks or 'all'}); "
            "check --annotations and --tasks."
        )
    return items


def balanced_subset(items: Sequence[EvalItem], limit: int) -> list[EvalItem]:
    """At most ``limit`` items taken round-robin across tasks (each task's first items first),
    returned in their original order: ``--limit 12`` over 12 tasks gives one question each."""
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_task.setdefault(item.task, []).append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < limit and any(depth < len(v) for v in by_task.values()):
        for idx in by_task.values():
            if depth < len(idx) and len(picked) < limit:
                picked.append(idx[depth])
        depth += 1
    return [items[i] for i in sorted(picked)]


def items_digest(items: Sequence[EvalItem]) -> str:
    """A short hash of the questions (uids, windows and prompts) of a run."""
    h = hashlib.sha1()
    for it in items:
        h.update(f"{it.uid}\x00{it.clip_start}\x00{it.clip_end}\x00{it.prompt}\x01".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Distributed runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the processes of a run (from ``RANK``/``WORLD_SIZE``, as set
    by ``torchrun`` and ``accelerate launch``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistEnv:
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", env.get("LOCAL_RANK", "0")))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as error:
            raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {error}") from None
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}.")
        return cls(rank, world, local)

    @property
    def answers_file(self) -> str:
        return ANSWERS if self.world_size == 1 else f"answers.rank{self.rank}.jsonl"


def answer_files(out: str | os.PathLike) -> list[Path]:
    """The answers files of a run directory: ``answers.jsonl`` then the per-rank parts."""
    out = Path(out)
    parts = sorted(out.glob("answers.rank*.jsonl"), key=lambda p: (len(p.name), p.name))
    main = out / ANSWERS
    return ([main] if main.exists() else []) + parts


def gather_records(out: str | os.PathLike, issues: DataIssues | None = None) -> list[dict[str, Any]]:
    """All answer records of a run directory (every part), first record per uid kept."""
    records: list[dict[str, Any]] = []
    for path in answer_files(out):
        records.extend(iter_jsonl(path, issues, missing_ok=True))
    return dedupe_by_uid(records, issues)


def merge_answers(out: str | os.PathLike, items: Sequence[EvalItem] | None = None) -> Path:
    """Write ``answers.jsonl`` as one record per question in question order (per-rank parts
    merged in, then removed). Records of unknown questions are kept at the end. Atomic."""
    out = Path(out)
    records = gather_records(out)
    if items is not None:
        order = {it.uid: k for k, it in enumerate(items)}
        records.sort(key=lambda r: order.get(str(r["uid"]), len(order)))
    parts = [p for p in answer_files(out) if p.name != ANSWERS]
    write_text(out / ANSWERS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for p in parts:
        p.unlink()
    return out / ANSWERS


def _wait_for_shards(out: Path, items: Sequence[EvalItem], timeout: float) -> bool:
    """Rank 0: wait until every question has a record in some answers file."""
    wanted = {it.uid for it in items}
    started = last_log = time.monotonic()
    while True:
        done = {str(r.get("uid")) for p in answer_files(out) for r in iter_jsonl(p, missing_ok=True)}
        missing = wanted - done
        if not missing:
            return True
        now = time.monotonic()
        if now - started > timeout:
            log.warning("gave up waiting for %d answers from the other processes after %.0f s; "
                        "rerun the same command to finish them", len(missing), timeout)
            return False
        if now - last_log > 60:
            log.info("rank 0 waits for %d answers from the other processes", len(missing))
            last_log = now
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A model's reply to one prompt on one clip, with what the model saw (``visual_tokens`` /
    ``kept_tokens``: before and after the memory, 0 when it is off; ``budget_tokens``: the tokens
    the budget asked for, ``None`` without one; ``prompt_tokens``: the prompt's length before
    pruning). ``reused_ms``: decoding and encoding this call did not pay because an earlier call
    on the same clip and prompt (another memory method) did; the run counts it in the latency."""

    text: str
    frames: int = 0
    visual_tokens: int = 0
    kept_tokens: int = 0
    prompt_tokens: int = 0
    budget_tokens: int | None = None
    memory_ms: float = 0.0
    reused_ms: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)


#: ``answerer(video_path, start, end, prompt, *, frames, min_pixels, max_pixels) -> Reply``:
#: ``frames`` is the :class:`~fluxmem.eval.protocol.FramePlan` of the call (native indices and the
#: rate reported to the model), ``min_pixels``/``max_pixels`` the per-frame limits.
Answerer = Callable[..., Reply]


class PreparedClips:
    """Questions decoded and encoded once for every memory method of a run: the processor's
    inputs and the vision tower's outputs per (clip, frames, pixels, prompt), kept until
    :meth:`clear` (the runner clears them after each question). ``prepared`` counts the
    preparations made, ``reused`` the calls that took one already made."""

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[Any, float]] = {}
        self.prepared = 0
        self.reused = 0

    def get(self, key: tuple, make: Callable[[], Any]) -> tuple[Any, float]:
        """``(prepared, reused_ms)``: ``reused_ms`` is what making it cost when it was made before, else 0."""
        if key in self._cache:
            self.reused += 1
            return self._cache[key][0], self._cache[key][1]
        started = time.perf_counter()
        value = make()
        self._cache[key] = (value, (time.perf_counter() - started) * 1000)
        self.prepared += 1
        return value, 0.0

    def clear(self) -> None:
        self._cache.clear()


class ModelAnswerer:
    """Answers prompts about clips with a loaded model: decodes exactly the planned frames and
    hands them to :func:`fluxmem.inference.prepare_question` at the planned rate, so that the
    processor's ``second_per_grid_ts`` is ``2 / frames.sample_fps`` (the published protocol's
    reported spacing, or the true one), then answers with the protocol's generation settings and
    the run's memory method and budget (:func:`fluxmem.inference.generate_answer`). Answerers
    that share ``clips`` decode and encode each clip once. ``budget_is_kept``: the budget is
    what the method keeps (it matches itself), recorded without running the method twice."""

    def __init__(self, model, processor, protocol: Protocol, *, use_fluxmem: bool = True, positions: str = "original",
                 memory=None, budget=None, clips: PreparedClips | None = None, budget_is_kept: bool = False) -> None:
        self.model, self.processor, self.protocol, self.use_fluxmem = model, processor, protocol, use_fluxmem
        self.positions = positions
        self.memory, self.budget, self.budget_is_kept = memory, budget, budget_is_kept
        self.clips = clips if clips is not None else PreparedClips()

    def __call__(self, video: Path, start: float, end: float, prompt: str, *, frames: FramePlan,
                 min_pixels: int | None = None, max_pixels: int | None = None) -> Reply:
        from ..inference import SamplingOptions, generate_answer, prepare_question
        from ..video import decode_frames

        def prepare():
            decoded = decode_frames(video, frames.indices)
            array = decoded.frames.permute(0, 2, 3, 1).numpy()
            sampling = SamplingOptions(fps=frames.sample_fps, min_pixels=min_pixels, max_pixels=max_pixels)
            return prepare_question(self.model, self.processor, array, prompt, sampling=sampling)

        key = (str(video), tuple(frames.indices), frames.sample_fps, min_pixels, max_pixels, prompt)
        prepared, reused_ms = self.clips.get(key, prepare)
        result = generate_answer(self.model, self.processor, prepared, max_new_tokens=self.protocol.max_new_tokens,
                                 use_fluxmem=self.use_fluxmem, memory=self.memory, budget=self.budget,
                                 positions=self.positions, **self.protocol.generation())
        memory = result.memory if self.use_fluxmem else {}
        target = memory.get("kept") if self.budget_is_kept else memory.get("target")
        return Reply(
            text=result.text,
            frames=len(frames.indices),
            visual_tokens=int(memory.get("tokens", 0)),
            kept_tokens=int(memory.get("kept", memory.get("tokens", 0))),
            prompt_tokens=int(result.prompt_tokens),
            budget_tokens=None if target is None else int(target),
            memory_ms=float(memory.get("memory_ms", 0.0)),
            reused_ms=reused_ms,
            timings_ms={k: round(v, 3) for k, v in result.timings_ms.items()},
        )


class _PeakMemory:
    """Peak memory of one question: GPU allocator peak when on CUDA, else the process's RSS peak."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        self.kind = "cuda_max_allocated" if self.cuda else "process_rss_peak"

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def read_mb(self) -> float:
        if self.cuda:
            import torch

            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _item_record_fields(item: EvalItem) -> dict[str, Any]:
    d = item.to_dict()
    prompt = d.pop("prompt")
    return {"category": item.category, "kind": item.kind, "prompt": prompt, "gold": item.gold,
            "eval_item": d}


def answer_item(
    item: EvalItem,
    settings: RunSettings,
    answerer: Answerer,
    videos: VideoMetaCache,
    run_issues: DataIssues,
    peak: _PeakMemory | None = None,
) -> dict[str, Any]:
    """Answer one question and return its answers-file record (a skip record when the video is
    missing or unreadable, the question cannot be placed in it, or its window holds no frame)."""
    bench, protocol = settings.bench, settings.protocol
    base = _item_record_fields(item)
    planned = plan_query(bench, protocol, item, Path(settings.videos), videos)
    for kind in planned.warnings:
        iss = planned.issues
        (run_issues.skip if iss.skipped.get(kind) else run_issues.warn)(kind, (iss.examples.get(kind) or [item.uid])[0])
    if planned.reason and planned.reason not in planned.issues.skipped:
        run_issues.skip(planned.reason, planned.detail)
    if planned.reason:
        return skip_record(item, planned.reason, planned.detail, **base)
    fitted, plan = planned.item, planned.plan
    replies: list[tuple[Turn, str]] = []
    costs: list[float] = []
    calls: list[Reply] = []
    frames_seen: list[int] = []
    if peak is not None:
        peak.reset()
    started = time.perf_counter()
    try:
        while plan is not None and not plan.frames.issue:
            t0 = time.perf_counter()
            reply = answerer(planned.path, plan.turn.start, plan.turn.end, plan.turn.prompt, frames=plan.frames,
                             min_pixels=plan.min_pixels, max_pixels=plan.max_pixels)
            costs.append(time.perf_counter() - t0 + reply.reused_ms / 1000)
            calls.append(reply)
            frames_seen.append(len(plan.frames.indices))
            replies.append((plan.turn, reply.text))
            turn = bench.next_turn(fitted, replies)
            plan = None if turn is None else plan_turn(bench, protocol, fitted, planned.path, planned.meta, turn)
    except VideoError as error:
        detail = str(error).splitlines()[0][:300]
        run_issues.skip("video_decode_error", f"{item.uid}: {detail}")
        return skip_record(item, "video_decode_error", detail, **base)
    latency = (time.perf_counter() - started) * 1000 + sum(r.reused_ms for r in calls)
    response = bench.response(fitted, replies, costs)
    timings: Counter[str] = Counter()
    for r in calls:
        timings.update(r.timings_ms)
    first = planned.plan
    method = settings.memory_method
    method_record = method.spec if method is not None else None
    record = {
        "uid": item.uid,
        "benchmark": item.benchmark,
        "task": item.task,
        "protocol": protocol.name,
        "positions": settings.positions,
        "response": response,
        **base,
        "clip": [fitted.clip_start, fitted.clip_end],
        "window": list(first.frames.window),
        "frames": frames_seen[0] if frames_seen else 0,
        "second_per_grid_ts": first.frames.second_per_grid_ts,
        "extracted": bench.extract(fitted, response),
        "correct": bench.verdict(fitted, response),
        "model_calls": len(calls),
        "visual_tokens": sum(r.visual_tokens for r in calls),
        "kept_tokens": sum(r.kept_tokens for r in calls),
        "prompt_tokens": sum(r.prompt_tokens for r in calls),
        "method": method_record,
        "budget": settings.budget,
        "budget_tokens": None if any(r.budget_tokens is None for r in calls) or not calls
        else sum(r.budget_tokens for r in calls),
        "memory_ms": round(sum(r.memory_ms for r in calls), 3),
        "latency_ms": round(latency, 3),
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }
    if peak is not None:
        record["peak_memory_mb"] = peak.read_mb()
        record["peak_memory_kind"] = peak.kind
    if planned.warnings:
        record["warnings"] = planned.warnings
    if item.kind == "proactive":
        record["final_prompt"] = item.meta.get("final_prompt")
    return record


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What :func:`run_benchmark` did. ``scores``/``table`` are ``None`` on ranks other than 0
    and when rank 0 gave up waiting for the others."""

    out: Path
    answered: int
    total: int
    scores: dict[str, Any] | None = None
    table: ScoreTable | None = None
    issues: DataIssues = field(default_factory=DataIssues)
    rank: int = 0


def run_benchmark(
    settings: RunSettings,
    *,
    model=None,
    processor=None,
    answerer: Answerer | None = None,
    dist: DistEnv | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    merge_timeout: float = 6 * 3600,
) -> RunResult:
    """Answer every question of ``settings`` not yet answered in ``settings.out``, then (rank 0)
    merge and score. ``model``/``processor`` (or any ``answerer``) skip loading ``settings.model``.
    ``on_record`` sees each record right after it is written. ``settings.out`` is checked against
    the run's inputs and locked for the run (another run on it refuses at once)."""
    dist = dist or DistEnv.from_env()
    with claim_run_dir(settings, lock_name=f"rank{dist.rank}" if dist.rank else None):
        refuse_comparison_dir(Path(settings.out))
        return run_lanes([settings], model=model, processor=processor,
                         answerers=None if answerer is None else [answerer], dist=dist, on_record=on_record,
                         progress=progress, merge_timeout=merge_timeout)[0]


def claim_run_dir(settings: RunSettings, *, lock_name: str | None = None, writes=RUN_WRITES):
    """Check ``settings.out`` against the run's inputs (annotations, videos, model) and hold its
    lock (:func:`fluxmem.outputs.claim_output`): a second run on the same directory refuses."""
    from ..loading import local_model_paths

    return claim_output(
        settings.out, flag="--out", kind="dir", writes=writes, what="results",
        inputs={"annotations": settings.annotations, "model": local_model_paths(settings.model)},
        folders={"video folder": settings.videos}, lock_name=lock_name,
    )


def run_lanes(
    lanes: Sequence[RunSettings],
    *,
    model=None,
    processor=None,
    answerers: Sequence[Answerer] | None = None,
    dist: DistEnv | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    merge_timeout: float = 6 * 3600,
) -> list[RunResult]:
    """Several runs that differ only in their memory method (and ``out``), answered together:
    question by question, every run still missing the question answers it, the runs' model
    answerers sharing one :class:`PreparedClips` (each clip decoded and encoded once for all of
    them). Each run resumes on its own; each gets its own :class:`RunResult`. The callers hold the
    output's lock (:func:`claim_run_dir`)."""
    from tqdm.auto import tqdm

    first = lanes[0]
    dist = dist or DistEnv.from_env()
    loader_issues = DataIssues()
    items = load_items(first, loader_issues)
    outs = [Path(lane.out) for lane in lanes]
    for lane, out in zip(lanes, outs):
        out.mkdir(parents=True, exist_ok=True)
        _prepare_run_dir(out, lane, items, loader_issues, dist)

    mine = shard_items(items, dist.world_size, dist.rank) if dist.world_size > 1 else list(items)
    prefix = f"[rank {dist.rank}/{dist.world_size}] " if dist.world_size > 1 else ""
    todo: list[set[str]] = []
    for out in outs:
        done = {str(r["uid"]) for r in gather_records(out)}
        todo.append({it.uid for it in mine if it.uid not in done})
        if done:
            log.warning("%sresuming in %s: %d of %d questions already answered, %d to go",
                        prefix, out, len(mine) - len(todo[-1]), len(mine), len(todo[-1]))
    pending = [it for it in mine if any(it.uid in uids for uids in todo)]

    issues = [DataIssues() for _ in lanes]
    device = first.device
    clips = PreparedClips()
    if pending and answerers is None:
        if model is None:
            model, processor, device = _load_model(first, dist)
        else:
            device = str(getattr(model, "device", "cpu"))
        answerers = [_model_answerer(model, processor, lane, clips) for lane in lanes]
    peak = _PeakMemory(device) if pending else None
    videos = VideoMetaCache()
    label = first.benchmark if len(lanes) == 1 else f"{first.benchmark} x {len(lanes)} methods"
    for item in tqdm(pending, desc=f"{prefix}{label}", unit="q", disable=not progress):
        for k, lane in enumerate(lanes):
            if item.uid not in todo[k]:
                continue
            record = answer_item(item, lane, answerers[k], videos, issues[k], peak)
            append_jsonl(outs[k] / dist.answers_file, record)
            if on_record is not None:
                on_record(record)
        clips.clear()
    results = [RunResult(out=out, answered=len(uids), total=len(items), issues=iss, rank=dist.rank)
               for out, uids, iss in zip(outs, todo, issues)]
    if dist.rank != 0:
        for result in results:
            log.warning("%sdone: %d answers in %s; rank 0 merges and scores", prefix, result.answered,
                        result.out / dist.answers_file)
        return results
    for result in results:
        if dist.world_size > 1 and not _wait_for_shards(result.out, items, merge_timeout):
            continue
        merge_answers(result.out, items)
        result.scores, result.table = score_run(result.out)
        _finish_run_file(result.out, result.scores)
    return results


def _model_answerer(model, processor, settings: RunSettings, clips: PreparedClips) -> ModelAnswerer:
    """The run's answerer: with no method or budget named, the model's own memory (as loaded);
    otherwise the named method at the budget, per call. A method asked to match itself
    (``fluxmem`` at ``match:fluxmem``) runs once: its budget is what it keeps."""
    named = settings.method is not None or settings.budget is not None
    method, budget = settings.memory_method, settings.memory_budget
    matches_itself = budget is not None and budget.kind == "match" and get_method(str(budget.value)) == method
    return ModelAnswerer(model, processor, settings.protocol, use_fluxmem=settings.use_fluxmem,
                         positions=settings.positions, memory=method if named else None, budget=None if matches_itself else budget, clips=clips,
                         budget_is_kept=matches_itself)


def refuse_comparison_dir(out: Path) -> None:
    """A directory holding a comparison of memory methods is not one run's directory."""
    path = out / RUN_FILE
    if path.exists():
        try:
            kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
        except (OSError, json.JSONDecodeError, AttributeError):
            return  # _prepare_run_dir says what is wrong with it
        if kind == COMPARISON_KIND:
            raise ConfigError(f"{out} holds a comparison of memory methods (one folder per method); pass the same "
                              "--memory list to resume it, fluxmem compare to show it, or a new --out directory.")


# --------------------------------------------------------------------------------------------
# Memory methods side by side
# --------------------------------------------------------------------------------------------


def method_dir_name(spec: str) -> str:
    """The folder of one method in a comparison: its spec with characters that some file systems
    refuse (``:`` above all) replaced by ``_`` (``recent:4`` -> ``recent_4``)."""
    return "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in spec.strip())


def split_methods(text: str | Sequence[str]) -> list[str]:
    """Memory specs from ``--memory`` (``"fluxmem,recent:4,evs:rate=0.6,seed=1"``): comma separated,
    a ``key=value`` item without ``:`` continuing the spec before it."""
    parts = [p.strip() for chunk in ([text] if isinstance(text, str) else text) for p in chunk.split(",")]
    specs: list[str] = []
    for part in parts:
        if not part:
            continue
        if "=" in part and ":" not in part and specs:
            specs[-1] += "," + part
        else:
            specs.append(part)
    if not specs:
        raise ConfigError("--memory needs at least one method, e.g. --memory fluxmem,recent:4,evs (fluxmem memories lists them).")
    return specs


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` did: one :class:`RunResult` per method (in the order asked) and,
    on rank 0 once every method is scored, the comparison (:mod:`.compare`)."""

    out: Path
    methods: list[str]
    runs: list[RunResult]
    comparison: Any = None


def run_comparison(
    settings: RunSettings,
    methods: Sequence[str],
    *,
    model=None,
    processor=None,
    answerers: Mapping[str, Answerer] | None = None,
    dist: DistEnv | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    merge_timeout: float = 6 * 3600,
    resamples: int = 1000,
    seed: int = 0,
) -> ComparisonResult:
    """Run the benchmark of ``settings`` once per memory method of ``methods`` (specs such as
    ``"recent:4"``) at ``settings.budget``: each method's run in ``out/<method folder>/`` (a
    complete run directory, equal to a run of that method alone), each query decoded and encoded
    once for all of them; then ``out/compare.md`` and ``out/compare.json`` (:mod:`.compare`).
    Resumable per method. ``answerers``: one per spec, instead of the model."""
    from .compare import comparison_of_run, write_comparison

    methods = list(methods)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--memory names a method twice ({', '.join(methods)}); name each once.")
    folders = [method_dir_name(m) for m in methods]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"--memory methods {', '.join(methods)} would share a folder; name each method once.")
    lanes = [settings.for_method(spec, Path(settings.out) / folder) for spec, folder in zip(methods, folders)]
    dist = dist or DistEnv.from_env()
    out = Path(settings.out)
    # one lock for the whole comparison; the methods' folders are written under it
    with claim_run_dir(settings, lock_name=f"rank{dist.rank}" if dist.rank else None, writes=None):
        _prepare_comparison_dir(out, settings, methods, folders, dist)
        runs = run_lanes(lanes, model=model, processor=processor,
                         answerers=None if answerers is None else [answerers[m] for m in methods], dist=dist,
                         on_record=on_record, progress=progress, merge_timeout=merge_timeout)
        result = ComparisonResult(out=out, methods=methods, runs=runs)
        if dist.rank == 0 and all(run.scores is not None for run in runs):
            result.comparison = comparison_of_run(out, resamples=resamples, seed=seed)
            write_comparison(out, result.comparison)
            record = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
            record.update(status="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            write_text(out / RUN_FILE, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return result


def _prepare_comparison_dir(out: Path, settings: RunSettings, methods: list[str], folders: list[str],
                            dist: DistEnv) -> None:
    """``out/run.json`` of a comparison: the methods, their folders and the budget; a directory
    holding a single run, or a comparison of other methods or budget, is refused."""
    record = {
        "kind": COMPARISON_KIND,
        "benchmark": settings.benchmark,
        "memory": methods,
        "folders": dict(zip(methods, folders)),
        "budget": settings.budget,
        "model": settings.model,
    }
    path = out / RUN_FILE
    if path.exists():
        previous = _read_run_file(path)
        if previous.get("kind") != COMPARISON_KIND:
            raise ConfigError(f"{out} holds a run of one memory method; pass a new --out directory for a comparison.")
        diffs = [f"{k}: {previous.get(k)!r} -> {record[k]!r}" for k in ("benchmark", "memory", "budget", "model")
                 if previous.get(k) != record[k]]
        if diffs:
            raise ConfigError(f"{out} holds a comparison with other settings ({', '.join(diffs)}); rerun with the same "
                              "settings to resume it, or pass a new --out directory.")
        record = {**previous, "status": "running", "resumed": int(previous.get("resumed", 0)) + 1}
    else:
        record.update(versions=_version_record(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), status="running")
    if dist.rank == 0:
        write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def _load_model(settings: RunSettings, dist: DistEnv):
    import torch

    from ..loading import load_model, resolve_device

    device = resolve_device(settings.device)
    if dist.world_size > 1 and device == "cuda":
        device = f"cuda:{dist.local_rank % max(1, torch.cuda.device_count())}"
    model, processor = load_model(
        settings.model, device=device, dtype=settings.dtype,
        attn_implementation=settings.attn_implementation, fluxmem=settings.memory,
        use_fluxmem=settings.use_fluxmem, positions=settings.positions,
    )
    return model, processor, device


def _version_record() -> dict[str, Any]:
    import torch
    import transformers

    from .. import __version__

    return {"fluxmem": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0]}


def _fingerprint(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: record.get(k) for k in _FINGERPRINT_KEYS}
    if "method" not in record and record.get("use_fluxmem"):  # a run recorded before memory methods: FluxMem
        out["method"] = get_method("fluxmem", **(record.get("memory") or {})).spec
    return out


def _read_run_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is unreadable ({error}); use a new --out directory.") from None


def _prepare_run_dir(out: Path, settings: RunSettings, items: Sequence[EvalItem],
                     loader_issues: DataIssues, dist: DistEnv) -> None:
    """Write ``run.json`` and ``items.jsonl``; refuse a directory holding a different run."""
    settings_record = settings.record()
    settings_record["items_digest"] = items_digest(items)
    run_path = out / RUN_FILE
    if run_path.exists():
        previous = _read_run_file(run_path)
        old, new = _fingerprint(previous.get("settings", {})), _fingerprint(settings_record)
        if old != new:
            diffs = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in _FINGERPRINT_KEYS if old[k] != new[k])
            raise ConfigError(
                f"{out} holds a run with other settings ({diffs}); rerun with the same settings to "
                "resume it, or pass a new --out directory."
            )
        if dist.rank != 0:
            return
        record = previous
        record["settings"] = settings_record  # paths may have moved
        record["resumed"] = int(record.get("resumed", 0)) + 1
        record["status"] = "running"
    else:
        record = {
            "benchmark": settings.benchmark,
            "versions": _version_record(),
            "settings": settings_record,
            "world_size": dist.world_size,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "questions": len(items),
            "data_issues": loader_issues.to_dict(),
        }
    record["world_size"] = dist.world_size
    write_text(run_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    items_text = "".join(json.dumps(it.to_dict(), ensure_ascii=False) + "\n" for it in items)
    items_path = out / ITEMS_FILE
    if not items_path.exists() or items_path.read_text(encoding="utf-8") != items_text:
        write_text(items_path, items_text)


def _finish_run_file(out: Path, scores: Mapping[str, Any]) -> None:
    path = out / RUN_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    record["status"] = "finished"
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["summary"] = {"overall": scores.get("overall"), "robust_overall": scores.get("robust", {}).get("overall"),
                         "answers": scores.get("answers"), "run_issues": scores.get("data", {}).get("run")}
    write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Scoring a run directory
# --------------------------------------------------------------------------------------------


def issues_from_dict(data: Mapping[str, Any] | None) -> DataIssues:
    """A quiet :class:`DataIssues` holding the counts of :meth:`DataIssues.to_dict`."""
    issues = DataIssues(log_limit=0)
    data = data or {}
    issues.counts.update(data.get("warnings", {}))
    issues.skipped.update(data.get("skipped", {}))
    issues.notes.update(data.get("notes", {}))
    issues.examples.update({k: list(v) for k, v in data.get("examples", {}).items()})
    return issues


def _items_of_run(out: Path, records: Sequence[Mapping[str, Any]]) -> list[EvalItem]:
    path = out / ITEMS_FILE
    if path.exists():
        return [EvalItem.from_dict(d) for d in iter_jsonl(path)]
    items = []
    for rec in records:  # the answers file alone: every record carries its question
        if isinstance(rec.get("eval_item"), Mapping):
            d = dict(rec["eval_item"], prompt=rec.get("prompt", ""))
            items.append(EvalItem.from_dict(d))
    return items


def score_run(out: str | os.PathLike, *, write: bool = True) -> tuple[dict[str, Any], ScoreTable]:
    """Scores of a run directory from its files alone (``answers*.jsonl``, with ``items.jsonl``
    and ``run.json`` when present); writes ``scores.json`` and ``scores.md`` (not while another
    run holds the directory)."""
    if not write or not Path(out).is_dir():  # nothing to lock (a missing directory: one line below)
        return _score_run(Path(out), write=write)
    with output_lock(out, flag="run directory", kind="dir"):
        return _score_run(Path(out), write=True)


def _score_run(out: Path, *, write: bool) -> tuple[dict[str, Any], ScoreTable]:
    if not answer_files(out):
        try:
            refuse_comparison_dir(out)
        except ConfigError:
            raise InputError(f"{out} holds a comparison of memory methods: fluxmem compare {out} shows it, "
                             f"fluxmem score {out}/METHOD scores one method.") from None
        raise InputError(f"{out} holds no {ANSWERS}; pass the --out directory of a fluxmem eval run.")
    run = {}
    if (out / RUN_FILE).exists():
        run = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    read_issues = DataIssues(log_limit=0)
    records = gather_records(out, read_issues)
    items = _items_of_run(out, records)
    if not items:
        raise InputError(f"{out}: no question found in {ITEMS_FILE} or in the answers' records.")
    bench = get_benchmark(run.get("benchmark") or items[0].benchmark)
    settings = run.get("settings", {})
    protocol = protocol_from_record(settings.get("protocol_settings"))
    loader = issues_from_dict(run.get("data_issues"))
    amap = {str(r["uid"]): r for r in records}
    scores = bench.score(items, amap, loader, protocol)
    uids = {it.uid for it in items}
    mine = [r for r in records if str(r["uid"]) in uids]
    answered = [r for r in mine if not r.get("skipped")]
    run_warnings: Counter[str] = Counter(w for r in mine for w in r.get("warnings", []))
    run_skips: Counter[str] = Counter(str(r["skipped"]) for r in mine if r.get("skipped"))
    scores["data"] = {
        "loader": run.get("data_issues") or DataIssues().to_dict(),
        "run": {"warnings": dict(sorted(run_warnings.items())), "skipped": dict(sorted(run_skips.items()))},
        "answers_file": read_issues.to_dict()["warnings"],
    }
    scores["answers"] = {"questions": len(items), "answered": len(answered), "skipped": len(mine) - len(answered),
                         "missing": len(items) - len(mine)}
    scores["efficiency"] = _efficiency(answered)
    scores["run"] = {
        "model": settings.get("model"),
        "use_fluxmem": settings.get("use_fluxmem"),
        "memory": settings.get("memory"),
        "protocol": settings.get("protocol"),
        "protocol_settings": settings.get("protocol_settings"),
        "versions": run.get("versions"),
    }
    table = _table(bench, scores)
    if write:
        write_text(out / SCORES_JSON, json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
        write_text(out / SCORES_MD, table.to_markdown())
    return scores, table


def _efficiency(answered: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    lat = sorted(float(r["latency_ms"]) / max(1, int(r.get("model_calls", 1)))
                 for r in answered if r.get("latency_ms") is not None)
    peaks = [float(r["peak_memory_mb"]) for r in answered if r.get("peak_memory_mb") is not None]
    tokens = sum(int(r.get("visual_tokens", 0)) for r in answered)
    kept = sum(int(r.get("kept_tokens", 0)) for r in answered)
    out: dict[str, Any] = {}
    if lat:
        out["latency_ms_per_call_mean"] = round(sum(lat) / len(lat), 3)
        out["latency_ms_per_call_median"] = round(lat[len(lat) // 2], 3)
    if peaks:
        out["peak_memory_mb_max"] = max(peaks)
        kinds = {r.get("peak_memory_kind") for r in answered if r.get("peak_memory_kind")}
        out["peak_memory_kind"] = "/".join(sorted(kinds))
    if tokens:
        out["visual_tokens"] = tokens
        out["kept_tokens"] = kept
        out["retained_fraction"] = round(kept / tokens, 6)
    return out


def _settings_note(scores: Mapping[str, Any]) -> list[str]:
    run = scores.get("run") or {}
    if not run.get("model") and run.get("use_fluxmem") is None:
        return []
    mem = run.get("memory") or {}
    memory = (f"FluxMem short_frames={mem.get('short_frames')} medium_frames={mem.get('medium_frames')}"
              if run.get("use_fluxmem") else "baseline (FluxMem off)")
    protocol = protocol_from_record(run.get("protocol_settings"))
    lines = [f"model {run.get('model')}; {memory}"]
    if protocol is not None:
        lines.append(describe(protocol))
    return lines


def _table(bench: Benchmark, scores: Mapping[str, Any]) -> ScoreTable:
    table = bench.table(scores)
    table.notes.extend(_settings_note(scores))
    data = scores.get("data") or {}
    loader, run = data.get("loader") or {}, data.get("run") or {}
    if data.get("answers_file"):
        table.notes.append("answers files: " + ", ".join(f"{k} {v}" for k, v in sorted(data["answers_file"].items()))
                           + " (torn lines passed over, the first record per question kept)")
    if loader.get("warnings"):
        table.notes.append("data (loading): " + ", ".join(f"{k} {v}" for k, v in loader["warnings"].items()))
    if run.get("warnings") or run.get("skipped"):
        counts = Counter(run.get("warnings", {}))
        counts.update(run.get("skipped", {}))
        table.notes.append("data (videos): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    ans = scores.get("answers")
    if ans:
        table.notes.append(f"questions {ans['questions']}: answered {ans['answered']}, skipped {ans['skipped']}, "
                           f"missing {ans['missing']}")
    eff = scores.get("efficiency") or {}
    if eff.get("latency_ms_per_call_mean") is not None:
        line = f"latency per model call: mean {eff['latency_ms_per_call_mean']:.0f} ms"
        if eff.get("peak_memory_mb_max") is not None:
            line += f"; peak memory {eff['peak_memory_mb_max']:.0f} MB ({eff['peak_memory_kind']})"
        if eff.get("visual_tokens"):
            line += f"; visual tokens kept {100 * eff['retained_fraction']:.1f}%"
        table.notes.append(line)
    return table


def score_replies(
    benchmark: str,
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    replies: str | os.PathLike | None = None,
    field_name: str | None = None,
    context: float | None = 60.0,
    tasks: Iterable[str] | None = None,
) -> tuple[dict[str, Any], ScoreTable]:
    """Score replies produced elsewhere (``fluxmem score ovobench|streamingbench``) and write
    ``scores.json``/``scores.md`` into ``out`` (checked against the inputs first, and locked). A
    replies file that holds no usable reply is an error (no scores are written)."""
    if context is not None and (isinstance(context, bool) or not isinstance(context, (int, float))
                                or not math.isfinite(context) or context < 0):
        raise ConfigError(f"context must be seconds >= 0 before each question (None: all of the past), got {context!r}.")
    claim = dict(flag="--out", kind="dir", writes=(SCORES_JSON, SCORES_MD), what="scores",
                 inputs={"annotations": annotations, "replies": replies})
    check_output(out, **claim)  # a bad --out fails before the scoring work; nothing is created yet
    issues = DataIssues()
    bench = get_benchmark(benchmark)
    scores = bench.score_replies(annotations, replies=str(replies) if replies else None, field=field_name,
                                 context=context, tasks=tasks, issues=issues)
    table = bench.table(scores)
    scores["data"] = {"loader": issues.to_dict()}
    if issues.counts:
        table.notes.append("data: " + ", ".join(f"{k} {v}" for k, v in sorted(issues.counts.items())))
    with claim_output(out, **claim) as folder:
        write_text(folder / SCORES_JSON, json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
        write_text(folder / SCORES_MD, table.to_markdown())
    return scores, table

