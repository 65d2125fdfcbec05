"""Memory settings: one frozen, validated, serialisable dataclass."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError

RECORD_KEYS = ("use_fluxmem", "memory", "budget")  # recorded next to the settings by `fluxmem train`
"""Keys saved next to the memory parameters that are not parameters (read by the loaders)."""


@dataclass(frozen=True)
class FluxMemConfig:
    """FluxMem's parameters (``algorithm.md``, "Defaults and parameters").

    ``short_frames`` and ``medium_frames`` count RAW video frames, as in the public API; the memory
    works in temporal grid steps (``temporal_patch_size`` raw frames each, 2 for Qwen2.5-VL), see
    :meth:`grid_steps`.
    """

    short_frames: int = 8
    medium_frames: int = 64
    direct_drop_sim: float | None = 0.8
    pair_sim_threshold: float | None = None

    def __post_init__(self) -> None:
        for name in ("short_frames", "medium_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer number of raw frames, got {value!r}.")
            if value < 0:
                raise ConfigError(f"{name} must be >= 0 raw frames, got {value}.")
        for name in ("direct_drop_sim", "pair_sim_threshold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{name} must be a number (a cosine similarity in [-1, 1]) or None, got {value!r}.")
            if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise ConfigError(
                    f"{name} is a cosine similarity and must lie in [-1, 1] (or be None), got {value!r}."
                )

    def grid_steps(self, temporal_patch_size: int = 2) -> tuple[int, int]:
        """``(S, M)``: short-term and mid-term capacities in temporal grid steps."""
        if temporal_patch_size < 1:
            raise ConfigError(f"temporal_patch_size must be >= 1, got {temporal_patch_size}.")
        short = self.short_frames // temporal_patch_size
        if short < 1:
            raise ConfigError(
                f"short_frames={self.short_frames} is less than one temporal grid step "
                f"({temporal_patch_size} raw frames for this model); use short_frames >= {temporal_patch_size}."
            )
        return short, self.medium_frames // temporal_patch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FluxMemConfig:
        """Build from a dict of memory parameters. ``use_fluxmem`` (the switch's default, which
        ``fluxmem train`` records next to them) is passed over; any other key is an error naming the
        closest parameter (a misspelt key never quietly leaves a default in place)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"FluxMem settings must be a dict such as {{'short_frames': 8}}, got {type(data).__name__} {data!r}.")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names and key not in RECORD_KEYS:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the settings are {', '.join(names)}."
                raise ConfigError(f"unknown FluxMem setting {key!r}; {hint}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> FluxMemConfig:
        return type(self)(**{**self.to_dict(), **changes})


def check_config(value: Any, name: str = "config") -> FluxMemConfig | None:
    """``value`` when it is a :class:`FluxMemConfig` or None; one clear error for anything else
    (a dict, a preset name ...), naming how to build one."""
    if value is None or isinstance(value, FluxMemConfig):
        return value
    raise ConfigError(
        f"{name} must be a FluxMemConfig (e.g. FluxMemConfig(short_frames=8) or FluxMemConfig.from_dict({{...}})), "
        f"got {type(value).__name__} {value!r}."
    )
