"""``Memory``: the base of every memory method, and the template around it.

A method decides only which visual tokens stay (:meth:`Memory.select`): given one video's visual
features ``[T*H*W, D]`` in the order the language model sees them (temporal raster order of the
merged grid) and the merged grid ``(T, H, W)``, it returns a bool keep mask ``[T*H*W]``, or, when
it merges tokens (as FluxMem's SDC does), a :class:`fluxmem.memory.CompressResult` whose anchors
carry their clusters' means. Everything else is shared: input checks, the token budget
(:mod:`.budget`), statistics (:class:`.stats.MemoryStats`), and, for causal methods, the streaming
form (:meth:`Memory.stream`). Positions, the key/value cache and vLLM are the callers' business:
they apply the keep mask and the merges the same way for every method.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import ConfigError, InputError
from ..memory import LONG, SHORT, CompressResult, FrameRecord, StepUpdate
from .budget import Budget, solve
from .stats import MemoryStats


@dataclass
class MemoryResult(CompressResult):
    """What a memory kept of one video: the keep mask, merges (anchors and their means, empty for
    methods that only drop), per-frame records, and what was asked for."""

    method: str = ""
    """The spec of the method that ran, knob solved (``"evs:rate=0.65"``)."""
    budget: Budget | None = None
    target: int | None = None
    """Visual tokens the budget asked for (``None`` without a budget)."""
    tiered: bool = False
    """Whether the frames' tiers mean something (FluxMem and its ablations)."""
    memory_ms: float = 0.0

    def stats(self, **extra) -> MemoryStats:
        t, h, w = self.grid_thw
        return MemoryStats(
            tokens=t * h * w,
            kept=self.kept_tokens,
            videos=1,
            method=self.method,
            budget=None if self.budget is None else str(self.budget),
            target=self.target,
            tiers=self.tier_counts() if self.tiered else None,
            memory_ms=self.memory_ms,
            extra=extra,
        )


def check_video(features: torch.Tensor, grid_thw) -> tuple[int, int, int]:
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = tuple(int(g) for g in grid_thw.tolist())
    if len(grid_thw) != 3 or min(int(g) for g in grid_thw) < 1:
        raise InputError(f"grid_thw must be three positive sizes (T, H, W), got {tuple(grid_thw)}.")
    t, h, w = (int(g) for g in grid_thw)
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != t * h * w:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise InputError(f"features must be [T*H*W, D] = [{t * h * w}, D] for grid_thw={(t, h, w)}, got {shape}.")
    return t, h, w


@dataclass(frozen=True)
class Memory:
    """Base class of the memory methods: options are dataclass fields; override :meth:`select`.

    Class attributes a method sets: ``name`` (registry name), ``summary`` (one line for
    ``fluxmem memories``), ``positional`` (the option ``name:VALUE`` sets), ``knob`` (the option a
    token budget solves, with :meth:`count` its closed form and :meth:`knob_values` its values, or
    ``None`` for a rate in ``[0, 1)``), ``causal`` (False: needs the whole video, so no streaming
    session) and ``tiered`` (its frames' tiers mean something).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    positional: ClassVar[str | None] = None
    knob: ClassVar[str | None] = None
    causal: ClassVar[bool] = True
    tiered: ClassVar[bool] = False
    restarts_video: ClassVar[bool] = False
    """True: the kept grid steps are fed as the video (SimpleStream), numbered from the video's
    first step; otherwise kept tokens keep their original positions."""

    # ----------------------------------------------------------- a method's part
    def select(self, features: torch.Tensor, grid_thw: tuple[int, int, int], *, temporal_patch_size: int):
        """bool keep mask ``[T*H*W]`` (or a ``CompressResult`` for a method that merges)."""
        raise NotImplementedError

    def count(self, grid_thw: tuple[int, int, int], *, temporal_patch_size: int) -> int:
        """Tokens kept at the current options (methods with a knob)."""
        raise NotImplementedError

    def knob_values(self, grid_thw: tuple[int, int, int], *, temporal_patch_size: int):
        """Values an integer knob can take (``None``: the knob is a rate in ``[0, 1)``)."""
        return None

    def stream(self, grid_hw: tuple[int, int], *, temporal_patch_size: int = 2):
        """The incremental form for a streaming session: an object with ``push(step_features)``
        as :class:`fluxmem.memory.FluxMemory` has (``kept``, ``num_final``, ``frames``...), equal
        after every push to :meth:`compress` on the steps pushed so far."""
        if not self.causal:
            raise ConfigError(
                f"{self.spec} needs the whole video before it can choose a token ({self.summary.rstrip('.')}), "
                "so it cannot run in a streaming session; use a causal method (fluxmem, recent:N, uniform:K, none)."
            )
        raise ConfigError(f"{self.spec} has no streaming form yet; use it offline (enable, generate, eval).")

    def check(self, *, temporal_patch_size: int) -> None:
        """Fail now, in one line, when this model (its temporal patch size) cannot run the method."""

    # ------------------------------------------------------------- the template
    @property
    def spec(self) -> str:
        """The string :func:`fluxmem.memories.get` turns back into this method: the options that
        differ from the defaults, and the positional one always (``recent:4``, ``evs:0.5``)."""
        shown = [f for f in dataclasses.fields(self) if getattr(self, f.name) != f.default or f.name == self.positional]
        if not shown:
            return self.name
        if [f.name for f in shown] == [self.positional]:
            return f"{self.name}:{getattr(self, self.positional)}"
        return self.name + ":" + ",".join(f"{f.name}={getattr(self, f.name)}" for f in shown)

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> Memory:
        return dataclasses.replace(self, **changes)

    def for_budget(self, budget, features, grid_thw, *, temporal_patch_size: int = 2) -> tuple[Memory, int]:
        """``(method, target)``: this method with its knob solved for ``budget`` on this video."""
        budget = Budget.parse(budget)
        grid_thw = check_video(features, grid_thw)
        target = budget.target(features, grid_thw, temporal_patch_size=temporal_patch_size)
        if self.knob is None:
            return self, target

        def count(value):
            return self.replace(**{self.knob: value}).count(grid_thw, temporal_patch_size=temporal_patch_size)

        values = self.knob_values(grid_thw, temporal_patch_size=temporal_patch_size)
        t, h, w = grid_thw
        return self.replace(**{self.knob: solve(count, target, values, total=t * h * w)}), target

    def compress(self, features: torch.Tensor, grid_thw, *, temporal_patch_size: int = 2, budget=None) -> MemoryResult:
        """Run the method on one video: ``[T*H*W, D]`` features, merged grid ``(T, H, W)``.

        ``budget``: a :class:`Budget` or what :meth:`Budget.parse` takes; the method's knob is
        solved for it on this video. The input is never modified.
        """
        started = time.perf_counter()
        grid_thw = check_video(features, grid_thw)
        method, target = self, None
        if budget is not None:
            budget = Budget.parse(budget)
            method, target = self.for_budget(budget, features, grid_thw, temporal_patch_size=temporal_patch_size)
        chosen = method.select(features, grid_thw, temporal_patch_size=temporal_patch_size)
        result = as_result(chosen, features, grid_thw)
        result.method, result.budget, result.target, result.tiered = method.spec, budget, target, method.tiered
        result.memory_ms = (time.perf_counter() - started) * 1000
        return result


def as_result(chosen, features: torch.Tensor, grid_thw: tuple[int, int, int]) -> MemoryResult:
    """A :class:`MemoryResult` from what :meth:`Memory.select` returned."""
    if isinstance(chosen, CompressResult):
        fields = {f.name: getattr(chosen, f.name) for f in dataclasses.fields(CompressResult)}
        return MemoryResult(**fields)
    t, h, w = grid_thw
    keep = torch.as_tensor(chosen)
    if keep.dtype != torch.bool or keep.shape != (t * h * w,):
        raise InputError(f"a memory's keep mask must be bool [T*H*W] = [{t * h * w}], got {keep.dtype} {tuple(keep.shape)}.")
    keep = keep.to(features.device)
    frames = [FrameRecord(index=i, tier=LONG, keep=row) for i, row in enumerate(keep.view(t, h * w))]
    empty = torch.zeros(0, dtype=torch.long, device=features.device)
    return MemoryResult(
        keep=keep,
        frames=frames,
        grid_thw=(t, h, w),
        source=features,
        anchor_index=empty,
        anchor_means=features.new_zeros(0, features.shape[1]),
        member_index=empty,
        member_cluster=empty,
    )


@dataclass(frozen=True)
class Rated(Memory):
    """A method whose option ``rate`` (the share of tokens dropped, in ``[0, 1)``) is what a token
    budget solves; it defines :meth:`count` at that rate."""

    positional = "rate"
    knob = "rate"

    rate: float = 0.5

    def __post_init__(self) -> None:
        check_rate(self)


@dataclass(frozen=True)
class WholeFrames(Memory):
    """A method that keeps or drops whole temporal grid steps: it defines :meth:`frame_kept`; the
    keep mask, the closed-form count and the streaming form follow."""

    def frame_kept(self, index: int, steps: int, *, temporal_patch_size: int) -> bool:
        """Whether step ``index`` of a video of ``steps`` steps stays."""
        raise NotImplementedError

    def horizon(self, *, temporal_patch_size: int) -> int | None:
        """Steps after which a step's decision never changes (``None``: never final)."""
        return 0

    def select(self, features, grid_thw, *, temporal_patch_size: int):
        t, h, w = grid_thw
        frames = torch.tensor([self.frame_kept(i, t, temporal_patch_size=temporal_patch_size) for i in range(t)],
                              dtype=torch.bool, device=features.device)  # fmt: skip
        return frames.repeat_interleave(h * w)

    def count(self, grid_thw, *, temporal_patch_size: int) -> int:
        t, h, w = grid_thw
        return h * w * sum(self.frame_kept(i, t, temporal_patch_size=temporal_patch_size) for i in range(t))

    def stream(self, grid_hw, *, temporal_patch_size: int = 2):
        return WholeFrameStream(self, grid_hw, temporal_patch_size)


@dataclass
class _Step:
    record: FrameRecord
    features: torch.Tensor | None


class WholeFrameStream:
    """Streaming form of a :class:`WholeFrames` method: a step stays whole until its decision is
    final (``horizon`` steps later), then keeps all its tokens or none."""

    def __init__(self, method: WholeFrames, grid_hw: tuple[int, int], temporal_patch_size: int) -> None:
        self.method = method
        self.temporal_patch_size = temporal_patch_size
        self.horizon = method.horizon(temporal_patch_size=temporal_patch_size)
        height, width = int(grid_hw[0]), int(grid_hw[1])
        if height < 1 or width < 1:
            raise InputError(f"grid_hw must be positive, got {grid_hw}.")
        self.grid_hw, self.cells = (height, width), height * width
        self._steps: list[_Step] = []
        self.num_final = 0

    @property
    def num_frames(self) -> int:
        return len(self._steps)

    @property
    def frames(self) -> list[FrameRecord]:
        return [step.record for step in self._steps]

    def push(self, features: torch.Tensor) -> StepUpdate:
        if features.ndim != 2 or features.shape[0] != self.cells:
            raise InputError(f"a grid step must be [H*W, D] = [{self.cells}, D] for grid {self.grid_hw}, got shape {tuple(features.shape)}.")
        index = self.num_frames
        self._steps.append(_Step(FrameRecord(index=index, tier=SHORT), features))
        update = StepUpdate(frame_index=index)
        if self.horizon is not None and index - self.horizon >= self.num_final:
            final = index - self.horizon
            step = self._steps[final]
            # a final step's decision: kept in every video that holds it and ``horizon`` more steps
            kept = self.method.frame_kept(final, index + 1, temporal_patch_size=self.temporal_patch_size)
            step.record.tier = LONG
            step.record.keep = torch.full((self.cells,), bool(kept), dtype=torch.bool, device=features.device)
            if not kept:
                step.features = step.features[:0]
            self.num_final = final + 1
            update.entered_long = final
        return update

    def kept(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = self._steps[index]
        if step.features is None:
            raise InputError(f"step {index}'s features were released; only its cells are known.")
        if step.record.keep is not None and not bool(step.record.keep.any()):
            return torch.zeros(0, dtype=torch.long, device=step.features.device), step.features[:0]
        return torch.arange(self.cells, device=step.features.device), step.features

    def keep_mask(self) -> torch.Tensor:
        if not self._steps:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat([
            s.record.keep if s.record.keep is not None else torch.ones(self.cells, dtype=torch.bool) for s in self._steps
        ])  # fmt: skip

    def forget(self, index: int) -> None:
        if not 0 <= index < self.num_final:
            raise InputError(f"only final steps can be forgotten: step {index} is not below num_final={self.num_final}.")
        step = self._steps[index]
        step.record.keep = torch.zeros_like(step.record.keep)
        step.features = step.features[:0] if step.features is not None else None

    def release(self, index: int) -> None:
        if not 0 <= index < self.num_final:
            raise InputError(f"only final steps can be released: step {index} is not below num_final={self.num_final}.")
        self._steps[index].features = None

    def feature_bytes(self) -> int:
        return sum(s.features.numel() * s.features.element_size() for s in self._steps if s.features is not None)


def check_positive_int(method: Memory, option: str, unit: str) -> None:
    value = getattr(method, option)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{method.name}'s {option} must be a positive number of {unit}, got {value!r}.")


def check_rate(method: Memory, option: str = "rate") -> None:
    value = getattr(method, option)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{method.name}'s {option} is the share of tokens dropped and must lie in [0, 1), got {value!r}.")
