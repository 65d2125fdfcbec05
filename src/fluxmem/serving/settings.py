"""FluxMem's settings inside vLLM: ``hf_overrides={"fluxmem": {...}}``, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..memory import FluxMemConfig

SERVING_KEYS = ("device", "dtype")
"""Keys of the ``fluxmem`` override that are not memory parameters."""

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ServingSettings:
    """What the plugin needs: the memory parameters, and where the processor-side encoder runs.

    ``device``: the torch device of the vision tower that runs in vLLM's API-server process
    (``"cpu"`` by default, so that it never takes GPU memory silently; ``"cuda:0"`` to share the
    first GPU with the engine). ``dtype``: that tower's dtype (default: the served model's dtype).
    """

    memory: FluxMemConfig = field(default_factory=FluxMemConfig)
    device: str = "cpu"
    dtype: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ServingSettings:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f'hf_overrides["fluxmem"] must be a dict of settings, got {type(data).__name__}; '
                'e.g. hf_overrides={"fluxmem": {"short_frames": 8}}.'
            )
        memory_keys = tuple(f.name for f in fields(FluxMemConfig))
        unknown = sorted(set(data) - set(memory_keys) - set(SERVING_KEYS))
        if unknown:
            raise ConfigError(
                f'unknown FluxMem setting(s) {", ".join(map(repr, unknown))} in hf_overrides["fluxmem"]; '
                f"known: {', '.join(memory_keys + SERVING_KEYS)}."
            )
        device = str(data.get("device", "cpu"))
        dtype = data.get("dtype")
        if dtype is not None and str(dtype).removeprefix("torch.") not in DTYPES:
            raise ConfigError(f"FluxMem setting dtype={dtype!r} is not one of {', '.join(DTYPES)} (or omit it).")
        return cls(
            memory=FluxMemConfig(**{k: data[k] for k in memory_keys if k in data}),
            device=device,
            dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        )

    @classmethod
    def from_hf_config(cls, hf_config) -> ServingSettings | None:
        """The settings of a served model, or ``None`` when FluxMem is off (no ``fluxmem`` override)."""
        data = getattr(hf_config, "fluxmem", None)
        if data is None:
            return None
        settings = cls.from_dict(data)
        vision = getattr(hf_config, "vision_config", None)
        settings.memory.grid_steps(int(getattr(vision, "temporal_patch_size", 2)))  # whole grid steps, checked now
        return settings

    def to_dict(self) -> dict[str, Any]:
        out = self.memory.to_dict()
        out["device"] = self.device
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out
