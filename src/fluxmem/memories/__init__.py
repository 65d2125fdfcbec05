"""Memory methods side by side: one seam, one token budget, one statistics type.

``fluxmem.memories.get("evs", rate=0.6).compress(features, grid_thw=(t, h, w)).keep`` is the keep
mask over one video's visual tokens. :class:`Memory` is the base class (a method decides only
which tokens stay), :class:`Budget` the token budget, :class:`MemoryStats` the statistics every
path reports. ``docs/memories.md`` lists the methods and shows how to add one.
"""

from .base import Memory, MemoryResult, Rated, WholeFrames, WholeFrameStream
from .budget import Budget
from .fluxmem import FluxMem
from .registry import DEFAULT, METHODS, describe, get, names, parse
from .stats import MemoryStats

__all__ = [
    "Memory",
    "MemoryResult",
    "Rated",
    "WholeFrames",
    "WholeFrameStream",
    "Budget",
    "FluxMem",
    "MemoryStats",
    "METHODS",
    "DEFAULT",
    "get",
    "names",
    "describe",
    "parse",
]
