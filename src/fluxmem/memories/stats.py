"""``MemoryStats``: what a memory did to the visual tokens, one type for every path.

The drop-in switch, the streaming session, the vLLM plugin, evaluation, training and the command
line all build their statistics here and print them with :meth:`MemoryStats.line`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

TIERS = ("short", "mid", "long")


@dataclass
class MemoryStats:
    """Visual tokens before and after a memory, over one or more videos.

    ``retained_fraction`` of no visual token at all (a text-only call, an empty stream) is 1.0:
    nothing was dropped, so the model saw everything it was given; 0.0 would read as "every token
    pruned" and drag averages over calls towards full pruning.
    """

    tokens: int = 0
    kept: int = 0
    videos: int = 0
    method: str | None = None
    """The memory's spec (``"fluxmem"``, ``"evs:rate=0.6"``...); ``None`` when the memory is off."""
    budget: str | None = None
    """The budget asked for (``"match:fluxmem"``, ``"0.35"``, ``"1200"``), ``None`` without one."""
    target: int | None = None
    """Visual tokens the budget asked for (summed over videos)."""
    tiers: dict[str, dict[str, int]] | None = None
    """FluxMem's tiers (frames, tokens, kept per tier); ``None`` for methods without tiers."""
    memory_ms: float | None = 0.0
    """Time the memory took; ``None`` where the path reports it elsewhere (the session's timings)."""
    extra: dict = field(default_factory=dict)
    """Path-specific figures carried along (``grid_thw``, ``encode_ms``, ``evicted_frames``...)."""

    @property
    def retained_fraction(self) -> float:
        return self.kept / self.tokens if self.tokens else 1.0

    @classmethod
    def combine(cls, parts: Iterable[MemoryStats], **extra) -> MemoryStats:
        """The sum over several videos (same method); tiers added tier by tier."""
        parts = list(parts)
        total = cls(extra=dict(extra))
        for part in parts:
            total.tokens += part.tokens
            total.kept += part.kept
            total.videos += part.videos
            if part.memory_ms is not None:
                total.memory_ms += part.memory_ms
            total.method = total.method or part.method
            total.budget = total.budget or part.budget
            if part.target is not None:
                total.target = (total.target or 0) + part.target
            if part.tiers is not None:
                total.tiers = add_tiers(total.tiers or {}, part.tiers)
        return total

    @classmethod
    def from_dict(cls, data: dict) -> MemoryStats:
        """Back from :meth:`to_dict` (a record, a JSON line)."""
        names = ("tokens", "kept", "videos", "method", "budget", "target", "tiers", "memory_ms")
        fields = {name: data[name] for name in names if name in data}
        extra = {k: v for k, v in data.items() if k not in names and k != "retained_fraction"}
        return cls(**fields, extra=extra)

    def to_dict(self) -> dict:
        out = {
            "videos": self.videos,
            "tokens": self.tokens,
            "kept": self.kept,
            "retained_fraction": self.retained_fraction,
            "method": self.method,
            "budget": self.budget,
            "target": self.target,
            "tiers": self.tiers,
        }
        if self.memory_ms is not None:
            out["memory_ms"] = round(self.memory_ms, 3)
        out.update(self.extra)
        return out

    def line(self) -> str:
        """One line for the console: ``[memory] evs: visual tokens 1200 -> 420 (35.0% kept) | ...``."""
        if self.method is None:
            return "[memory] off"
        parts = [f"[memory] {self.method}: visual tokens {self.tokens} -> {self.kept} ({100 * self.retained_fraction:.1f}% kept)"]
        if self.budget is not None:
            parts.append(f"budget {self.budget} = {self.target}")
        if self.tiers:
            parts.append(" ".join(f"{t} {e['kept']}/{e['tokens']}" for t, e in self.tiers.items() if e["frames"]))
        if self.memory_ms is not None:
            parts.append(f"memory {self.memory_ms:.1f} ms")
        return " | ".join(parts)


def add_tiers(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out = {tier: dict(entry) for tier, entry in total.items()}
    for tier, entry in part.items():
        into = out.setdefault(tier, {"frames": 0, "tokens": 0, "kept": 0})
        for key, value in entry.items():
            into[key] = into.get(key, 0) + value
    return out
