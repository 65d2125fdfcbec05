"""One token budget for every method: a count, a fraction, or FluxMem's (any method's) count.

``Budget.parse("match:fluxmem")`` asks each method for exactly the visual tokens that method kept
on the same video (the fair comparison); ``Budget.parse(0.35)`` for 35% of the video's tokens
(rounded down); ``Budget.parse(1200)`` for 1200 tokens. A method with a knob (a rate, a frame count,
a stride) has it solved so that it keeps exactly the target, or the nearest count it can reach;
a method without one keeps what it decides, and its statistics show both figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Budget:
    kind: str
    """``"count"``, ``"fraction"`` or ``"match"``."""
    value: int | float | str

    @classmethod
    def parse(cls, value) -> Budget:
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"a token budget is a count (1200), a fraction (0.35) or match:METHOD, got {value!r}.")
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("match:"):
                spec = text[len("match:") :].strip()
                if not spec:
                    raise ConfigError("match: needs a method to match, e.g. --budget match:fluxmem.")
                from .registry import get

                get(spec)  # an unknown method fails now, with the list of names
                return cls("match", spec)
            try:
                value = int(text) if text.isdigit() else float(text)
            except ValueError:
                raise ConfigError(
                    f"a token budget is a count (1200), a fraction (0.35) or match:METHOD, got {text!r}."
                ) from None
        if isinstance(value, int):
            if value < 1:
                raise ConfigError(f"a token budget count must be >= 1 visual token, got {value}.")
            return cls("count", value)
        if isinstance(value, float):
            if not math.isfinite(value) or not 0.0 < value <= 1.0:
                raise ConfigError(f"a token budget fraction must lie in (0, 1], got {value!r}; give a count as an integer.")
            return cls("fraction", value)
        raise ConfigError(f"a token budget is a count (1200), a fraction (0.35) or match:METHOD, got {value!r}.")

    def __str__(self) -> str:
        return f"match:{self.value}" if self.kind == "match" else str(self.value)

    def target(self, features, grid_thw, *, temporal_patch_size: int) -> int:
        """Visual tokens this budget asks for on one video."""
        t, h, w = grid_thw
        total = t * h * w
        if self.kind == "count":
            return min(int(self.value), total)
        if self.kind == "fraction":
            return int(total * float(self.value))
        from .registry import get

        return get(str(self.value)).compress(features, grid_thw, temporal_patch_size=temporal_patch_size).kept_tokens


def solve(count, target: int, candidates=None, *, total: int | None = None):
    """The knob value whose ``count(value)`` is closest to ``target`` (ties: the smaller count).

    ``candidates``: the values of an integer knob, any order; ``None``: a rate in ``[0, 1)`` on which
    ``count`` does not increase: ``1 - target / total`` when it hits the target (the rate a reader
    expects), else solved by bisection to the float (closed forms are cheap).
    """
    if candidates is not None:
        return min(candidates, key=lambda v: (abs(count(v) - target), count(v)))
    if total:
        plain = 1.0 - target / total
        if 0.0 <= plain < 1.0 and count(plain) == target:
            return plain
    lo, hi = 0.0, math.nextafter(1.0, 0.0)  # count(lo) >= count(hi)
    if count(lo) <= target:
        return lo
    if count(hi) >= target:
        return hi
    for _ in range(200):  # smallest rate with count <= target
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if count(mid) <= target:
            hi = mid
        else:
            lo = mid
    return lo if abs(count(lo) - target) < abs(count(hi) - target) else hi
