"""The memory methods by name: ``get("evs", rate=0.6)``, ``get("recent:4")``, ``get("evs:rate=0.6")``.

Adding a method: one file with a :class:`Memory` subclass, one line in :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .base import Memory
from .evs import EVS
from .fluxmem import FluxMem, FluxMemFixedThreshold, FluxMemWithoutSDC, FluxMemWithoutTAS
from .none import KeepAll
from .random_subset import RandomSubset
from .recent import Recent
from .uniform import Uniform
from .vidcom2 import VidCom2

METHODS: dict[str, type[Memory]] = {
    cls.name: cls
    for cls in (
        FluxMem,
        FluxMemWithoutTAS,
        FluxMemWithoutSDC,
        FluxMemFixedThreshold,
        Recent,
        Uniform,
        RandomSubset,
        EVS,
        VidCom2,
        KeepAll,
    )
}
DEFAULT = "fluxmem"


def names() -> list[str]:
    return list(METHODS)


def describe() -> list[tuple[str, str]]:
    """``(name, one line)`` per method, for ``fluxmem memories``."""
    return [(name, cls.summary) for name, cls in METHODS.items()]


def _value(text: str):
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse(spec: str) -> tuple[str, dict]:
    """``(name, options)`` of a spec string: ``name``, ``name:VALUE`` or ``name:key=value,...``."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in METHODS:
        raise ConfigError(f"unknown memory method {name!r}; choose one of {', '.join(METHODS)} (fluxmem memories lists them).")
    options = {}
    if rest.strip():
        if "=" not in rest:
            positional = METHODS[name].positional
            if positional is None:
                raise ConfigError(f"{name} takes no value after ':'; give options as {name}:key=value.")
            options[positional] = _value(rest)
        else:
            for item in rest.split(","):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ConfigError(f"memory option {item!r} in {spec!r} is not key=value.")
                options[key.strip()] = _value(value)
    return name, options


def get(spec: str | Memory | None = None, **options) -> Memory:
    """A memory method from its name or spec string (``None``: FluxMem), ``options`` on top."""
    if isinstance(spec, Memory):
        _check_options(spec.name, type(spec), options)
        return spec.replace(**options) if options else spec
    if spec is not None and not isinstance(spec, str):
        raise ConfigError(f"a memory method is a name such as 'evs' or 'recent:4', got {spec!r}.")
    name, parsed = parse(spec or DEFAULT)
    parsed.update(options)
    _check_options(name, METHODS[name], parsed)
    return METHODS[name](**parsed)


def _check_options(name: str, cls: type[Memory], options: dict) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(unknown)}; its options are {', '.join(known) or 'none'}.")
