"""FluxMem's settings inside vLLM: ``hf_overrides={"fluxmem": {...}}``, validated once.

``{"memory": "evs:0.6", "budget": "match:fluxmem"}`` picks another memory method and a token
budget (``fluxmem.memories``); FluxMem's own parameters (``short_frames``...) apply to FluxMem and
its ablations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..memories import Budget, FluxMem, Memory
from ..memories import get as get_memory
from ..memory import FluxMemConfig

SERVING_KEYS = ("memory", "budget", "device", "dtype")
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
    method_spec: str | None = None
    """The memory method (``None``: FluxMem with :attr:`memory`)."""
    budget: str | None = None

    @property
    def method(self) -> Memory:
        """The memory method every video of this model goes through."""
        if self.method_spec is None:
            return FluxMem.from_config(self.memory)
        return get_memory(self.method_spec)

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
        given = {k: data[k] for k in memory_keys if k in data}
        memory = FluxMemConfig(**given)
        spec, budget = data.get("memory"), data.get("budget")
        if spec is not None:
            method = get_memory(spec)  # an unknown method fails here, before vLLM starts
            if not isinstance(method, FluxMem) and given:
                raise ConfigError(f"{', '.join(given)} are FluxMem settings; memory={spec!r} does not take them.")
            if isinstance(method, FluxMem):
                method = method.replace(**given)
                memory = method.config
            spec = method.spec
        settings = cls(
            memory=memory,
            device=device,
            dtype=None if dtype is None else str(dtype).removeprefix("torch."),
            method_spec=spec,
            budget=None if budget is None else str(Budget.parse(budget)),
        )
        settings.method  # FluxMem settings that make no sense fail now
        return settings

    @classmethod
    def from_hf_config(cls, hf_config) -> ServingSettings | None:
        """The settings of a served model, or ``None`` when FluxMem is off (no ``fluxmem`` override)."""
        data = getattr(hf_config, "fluxmem", None)
        if data is None:
            return None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = self.memory.to_dict() if isinstance(self.method, FluxMem) else {}
        if self.method_spec is not None:
            out["memory"] = self.method_spec
        if self.budget is not None:
            out["budget"] = self.budget
        out["device"] = self.device
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out
