"""The one interface every benchmark implements, and the registry the runner looks them up in.

A benchmark is one object (one module): it loads its annotations into
:class:`~fluxmem.eval.common.EvalItem` s for a protocol, says which file each query reads and
which seconds and frames of it the model sees, drives multi-call queries as a pure state machine
(the runner makes the calls), scores a reply, aggregates, and draws its table. The runner knows
nothing benchmark-specific; a third streaming benchmark is one more module that subclasses
:class:`Benchmark` and calls :func:`register` (as lmms-eval registers its ``Task`` s)::

    @register
    class MyBench(Benchmark):
        name = "mybench"
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ConfigError
from .common import DataIssues, EvalItem, ScoreTable, Tally
from .protocol import (
    FramePlan,
    Protocol,
    VideoMeta,
    end_anchored_frames,
    published_frames,
)


class Turn(NamedTuple):
    """One model call: the prompt asked about the seconds ``[start, end]`` of the query's video."""

    start: float
    end: float
    prompt: str


class Benchmark:
    """Base class: override the class attributes and the methods marked so."""

    #: registry name (``fluxmem eval NAME``)
    name: str = ""
    #: table title
    title: str = ""
    #: one-line help for the command line
    help: str = ""

    # ---------------------------------------------------------------- protocol and data

    def protocol(self, name: str) -> Protocol:
        """The protocol ``name`` resolved for this benchmark (override)."""
        raise NotImplementedError

    def load(self, annotations: str | os.PathLike, protocol: Protocol, *, tasks: Iterable[str] | None = None,
             issues: DataIssues | None = None, video_prefix: str = "") -> list[EvalItem]:
        """The queries of ``annotations`` with the prompts and windows of ``protocol`` (override)."""
        raise NotImplementedError

    def video_path(self, item: EvalItem, videos: Path, protocol: Protocol) -> Path:
        """The file the query reads (default: ``videos / item.video``)."""
        return Path(videos) / item.video

    def frames(self, item: EvalItem, protocol: Protocol, meta: VideoMeta, turn: Turn) -> FramePlan:
        """The frames a call sees, by the protocol's rule (default: StreamingBench-like windows
        ``[turn.start, turn.end]``)."""
        if protocol.frames == "published":
            return published_frames(meta.frames, meta.fps, turn.start, turn.end,
                                    min_frames=protocol.min_frames or 2, max_frames=protocol.max_frames,
                                    sample_rate=protocol.fps)
        return end_anchored_frames(meta.frames, meta.fps, turn.start, turn.end, rate=protocol.fps,
                                   max_frames=protocol.max_frames)

    def fit(self, item: EvalItem, protocol: Protocol, meta: VideoMeta, issues: DataIssues) -> EvalItem | None:
        """The query once its video's length is known (past-the-end handling); ``None`` when
        skipped (the reason counted in ``issues``). Default: :func:`~fluxmem.eval.common.fit_to_duration`
        with the protocol's ``past_end`` (``"published"`` leaves the window as asked: the frame
        rule clips it)."""
        from .common import fit_to_duration

        if protocol.past_end == "published":
            return item
        return fit_to_duration(item, meta.duration, issues, policy=protocol.past_end)

    # ---------------------------------------------------------------- calls

    def first_turn(self, item: EvalItem) -> Turn:
        """The first (usually only) call of a query."""
        return Turn(item.clip_start, item.clip_end, item.prompt)

    def next_turn(self, item: EvalItem, replies: Sequence[tuple[Turn, str]]) -> Turn | None:
        """The next call after ``replies`` so far, or ``None`` when the query is done (default:
        one call). Pure: the runner makes the calls."""
        return None

    def response(self, item: EvalItem, replies: Sequence[tuple[Turn, str]], costs: Sequence[float]) -> Any:
        """What is stored as the query's ``response`` (default: the one reply's text)."""
        return replies[-1][1] if replies else None

    # ---------------------------------------------------------------- scoring

    def columns(self, protocol: Protocol | None) -> tuple[str, ...]:
        """Score columns of a run under ``protocol``."""
        return tuple(protocol.scoring) if protocol is not None else ("official", "robust")

    def extract(self, item: EvalItem, response: Any) -> dict[str, Any]:
        """What each scoring rule read in the reply (for people reading the answers file)."""
        return {}

    def verdict(self, item: EvalItem, response: Any) -> dict[str, bool | None]:
        """Per column, whether the reply is right (``None``: left out of that column)."""
        raise NotImplementedError

    def score(self, items: Sequence[EvalItem], answers: Any, issues: DataIssues | None = None,
              protocol: Protocol | None = None) -> dict[str, Any]:
        """The score dict of a run (override)."""
        raise NotImplementedError

    def aggregate(self, tally: Tally, task_categories: Mapping[str, str]) -> dict[str, Any] | None:
        """The official column (``{"tasks", "overall", ...}``) from per-task counts alone, as
        :meth:`score` aggregates them, where the benchmark's score is such a function (``None``:
        it is not). Lets a bootstrap rescore thousands of resamples without reading replies again."""
        return None

    def table(self, scores: Mapping[str, Any]) -> ScoreTable:
        """The Markdown/JSON table of ``scores`` (override)."""
        raise NotImplementedError

    def score_replies(self, annotations: str | os.PathLike, *, replies: str | None, field: str | None,
                      context: float | None, tasks: Iterable[str] | None, issues: DataIssues) -> dict[str, Any]:
        """Scores of replies produced elsewhere (``fluxmem score NAME``; override)."""
        raise ConfigError(f"fluxmem score {self.name} is not supported.")


_REGISTRY: dict[str, Benchmark] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} needs a name to be registered.")
    _REGISTRY[cls.name] = cls()
    return cls


#: Modules of ``fluxmem.eval`` that are not benchmarks; every other module of the package is
#: imported once, so that a benchmark module registers itself just by being there.
_NOT_BENCHMARKS = {"benchmark", "common", "compare", "dryrun", "protocol", "runner", "synthetic", "lmms"}
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil

    from .. import eval as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_BENCHMARKS and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _loaded = True


def benchmark_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; a clear error naming the known ones otherwise."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(_REGISTRY)}.") from None


class QueryPlan(NamedTuple):
    """What one call of a query will see (the dry run's line, the runner's input)."""

    video: Path
    turn: Turn
    frames: FramePlan
    min_pixels: int | None
    max_pixels: int | None
