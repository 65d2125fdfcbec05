"""The FluxMem switch on one model instance: ``enable(model)`` and ``use_fluxmem=True``.

The memory method is FluxMem unless one is named: ``enable(model, memory="evs", budget=...)`` or
``generate(..., memory="recent:4", budget="match:fluxmem")`` (any :mod:`fluxmem.memories` method;
the same keep-mask path prunes for all of them).

It is a forward pre-hook registered on that instance only (no class is patched, other models in
the process are untouched). On a prefill that carries videos it hands the stock forward pruned
``inputs_embeds``, their original positions, the re-padded mask and re-aligned labels; on the
decoding steps that follow it maps ``generate``'s attention mask (which still counts the dropped
tokens) onto the shorter key/value cache. The mapping travels with the cache object (the one the
forward receives under the keyword :func:`hf.cache_argument` resolved), so ``generate``, manual
loops and beam expansion all keep working; a decoding step after a pruned prefill whose cache
does not carry it raises instead of running on.

Memory statistics belong to the call that produced them: ``generate(..., fluxmem_stats=callback)``
(or ``forward``) hands the call's :class:`MemoryReport` to ``callback``, and
``get_state(model).last_report`` is the report of the last call made in the current thread / task.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
import weakref
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..memories import Budget, FluxMem, Memory, MemoryStats
from ..memories import get as get_memory
from ..memory import FluxMemConfig
from . import hf, registry
from .base import ModelAdapter
from .pruning import VideoReport, prune_prefill

logger = logging.getLogger(__name__)

# Keyword arguments the switch takes out of forward/generate calls.
CALL_OPTIONS = ("use_fluxmem", "memory", "budget", "short_frames", "medium_frames", "direct_drop_sim", "pair_sim_threshold")
STATS_OPTION = "fluxmem_stats"
_STATE = "_fluxmem_state"
# Options given to generate(), seen by every forward call it makes (per thread / task).
_CALL: contextvars.ContextVar[dict | None] = contextvars.ContextVar("fluxmem_call", default=None)
# The report of the last call per switch, per thread / task.
_LAST: contextvars.ContextVar[dict | None] = contextvars.ContextVar("fluxmem_last_report", default=None)
# Which caches a pruned prefill filled, and how they relate to the caller's sequence.
_PREFIXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DROP_AFTER_PREPARE = (
    "input_ids",
    "mm_encoder_outputs",
    "pixel_values",
    "pixel_values_videos",
    "image_grid_thw",
    "video_grid_thw",
    "second_per_grid_ts",
    "mm_token_type_ids",
)


@dataclass
class MemoryReport:
    """What the memory did in one call (one ``generate`` or one forward): per video, tokens before
    and after, per tier."""

    videos: list[VideoReport] = field(default_factory=list)
    prepare_ms: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.videos)

    @property
    def stats(self) -> MemoryStats:
        """Visual tokens before and after (per tier for FluxMem) over the videos of the call."""
        return MemoryStats.combine(r.stats for r in self.videos)

    def summary(self) -> dict:
        return self.stats.to_dict()


@dataclass
class FluxMemState:
    """The switch on a model instance: its family, memory settings and whether it is on by default."""

    adapter: ModelAdapter
    config: FluxMemConfig
    default_active: bool
    handle: torch.utils.hooks.RemovableHandle | None = None
    memory: Memory | None = None
    """The memory method (``None``: FluxMem with :attr:`config`)."""
    budget: Budget | None = None

    @property
    def method(self) -> Memory:
        return self.memory if self.memory is not None else FluxMem.from_config(self.config)

    @property
    def last_report(self) -> MemoryReport:
        """The report of the last call through this switch in the current thread / task (an empty
        report before the first)."""
        return (_LAST.get() or {}).get(id(self)) or MemoryReport()

    def _set_last(self, report: MemoryReport) -> None:
        reports = dict(_LAST.get() or {})
        reports[id(self)] = report
        _LAST.set(reports)

    @property
    def last_reports(self) -> list[VideoReport]:
        return self.last_report.videos

    @last_reports.setter
    def last_reports(self, videos: list[VideoReport]) -> None:
        self._set_last(MemoryReport(list(videos)))

    def summary(self) -> dict:
        return self.last_report.summary()


@dataclass
class _Prefix:
    """How a pruned prefill's cache relates to the caller's (unpruned) sequence."""

    attention_mask: torch.Tensor  # [B, L'] mask of the pruned prefill
    original_length: int  # L
    pruned_length: int  # L'
    rope_deltas: torch.Tensor | None  # [B, 1] next text position minus L


def unwrap(model):
    """The transformers model inside wrappers such as ``peft.PeftModel``."""
    seen = set()
    while hasattr(model, "get_base_model") and id(model) not in seen:
        seen.add(id(model))
        inner = model.get_base_model()
        if inner is model:
            break
        model = inner
    return model


def get_state(model) -> FluxMemState | None:
    return getattr(unwrap(model), _STATE, None)


def install(model, config: FluxMemConfig | None = None, *, default_active: bool, memory=None, budget=None) -> FluxMemState:
    """Install the switch on ``model`` (a second call updates the settings). ``memory``: a method
    or spec (``"evs:0.6"``; default FluxMem with ``config``); ``budget``: what
    :meth:`Budget.parse` takes. Checks the installed transformers against what the switch relies
    on first (:func:`hf.check_model`)."""
    model = unwrap(model)
    adapter = registry.adapter_for(model)
    memory = None if memory is None else get_memory(memory)
    if isinstance(memory, FluxMem):
        config = memory.config if config is None else config
        memory = memory if type(memory) is not FluxMem else None  # plain FluxMem lives in config
    config = config or FluxMemConfig()
    budget = None if budget is None else Budget.parse(budget)
    config.grid_steps(adapter.temporal_patch_size)  # reject impossible settings now, not mid-call
    if memory is not None:
        memory.check(temporal_patch_size=adapter.temporal_patch_size)
    hf.check_model(model)
    state = getattr(model, _STATE, None)
    if state is not None:
        state.config, state.default_active, state.memory, state.budget = config, default_active, memory, budget
        return state
    state = FluxMemState(adapter=adapter, config=config, default_active=default_active, memory=memory, budget=budget)
    state.handle = model.register_forward_pre_hook(_pre_forward, with_kwargs=True)
    object.__setattr__(model, _STATE, state)
    object.__setattr__(model, "generate", _generate_taking_options(model.generate, state))
    return state


def detach(model) -> None:
    model = unwrap(model)
    state = getattr(model, _STATE, None)
    if state is not None:
        state.handle.remove()
        object.__delattr__(model, _STATE)
        model.__dict__.pop("generate", None)


@contextlib.contextmanager
def enabled(model, config: FluxMemConfig | None = None, **options):
    """FluxMem on for ``model`` inside the block; afterwards the model is as it was (switch removed,
    or its earlier settings back)."""
    before = get_state(model)
    saved = None if before is None else (before.config, before.default_active, before.memory, before.budget)
    memory, budget = options.pop("memory", None), options.pop("budget", None)
    config = (config or (before.config if before is not None else FluxMemConfig()))
    install(model, config.replace(**options) if options else config, default_active=True, memory=memory, budget=budget)
    try:
        yield model
    finally:
        if saved is None:
            detach(model)
        else:
            before.config, before.default_active, before.memory, before.budget = saved


def _generate_taking_options(generate, state: FluxMemState):
    """``generate`` that accepts the FluxMem call options, passes them to the forward hook and
    hands the call's :class:`MemoryReport` to ``fluxmem_stats``."""

    @functools.wraps(generate)
    def generate_with_fluxmem(*args, **kwargs):
        options = {key: kwargs.pop(key) for key in CALL_OPTIONS if key in kwargs}
        callback = kwargs.pop(STATS_OPTION, None)
        # generate() encodes the pixels itself and drops the grids before the prefill: keep them.
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        for key in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts"):
            if kwargs.get(key) is not None:
                options[key] = kwargs[key]
        if input_ids is not None:
            options["input_ids"] = input_ids
        call = {"options": options, "report": MemoryReport(), "pruned": False}
        token = _CALL.set(call)
        try:
            result = generate(*args, **kwargs)
        finally:
            _CALL.reset(token)
        state._set_last(call["report"])
        if callback is not None:
            callback(call["report"])
        return result

    return generate_with_fluxmem


def _cache_of(module, kwargs: dict):
    """``(keyword, cache)``: the cache the forward receives under the keyword the installed
    transformers uses; a cache passed under the older name is moved to it."""
    name = hf.cache_argument(module)
    for other in hf.CACHE_NAMES:
        if other != name and kwargs.get(other) is not None:
            if kwargs.get(name) is not None:
                raise InputError(f"the forward got a cache as both {name}= and {other}=; pass it once, as {name}=.")
            kwargs[name] = kwargs.pop(other)
    return name, kwargs.get(name)


def _pre_forward(module, args, kwargs):
    state: FluxMemState = getattr(module, _STATE)
    if args:
        kwargs = {**dict(zip(hf.forward_parameters(module), args)), **kwargs}
        args = ()
    call = _CALL.get()
    context = dict(call["options"]) if call is not None else {}
    options = {key: context[key] for key in CALL_OPTIONS if key in context}
    options.update({key: kwargs.pop(key) for key in CALL_OPTIONS if key in kwargs})
    callback = kwargs.pop(STATS_OPTION, None)
    use = options.pop("use_fluxmem", None)

    cache_name, cache = _cache_of(module, kwargs)
    past = hf.cache_length(cache)
    prefix = _PREFIXES.get(cache) if cache is not None else None
    if past > 0:
        if prefix is not None:
            return args, _continue_after_pruned_prefill(prefix, kwargs, past)
        if call is not None and call["pruned"]:
            raise hf.unsupported([
                (f"a decoding step after a pruned prefill received a cache ({cache_name}=) that the prefill did not "
                "fill: generate no longer hands the forward the cache it passed to the prefill")
            ], "the FluxMem switch")  # fmt: skip
        return args, kwargs

    report = MemoryReport()
    active = state.default_active if use is None else bool(use)
    has_video = kwargs.get("pixel_values_videos") is not None or (kwargs.get("mm_encoder_outputs") or {}).get("video")
    if not active or not has_video:
        _publish(state, call, report, callback)
        return args, kwargs  # text-only prompts and images run unpruned
    if kwargs.get("input_ids") is None:
        raise InputError("FluxMem needs input_ids to find the videos in the prompt; pass input_ids, not inputs_embeds, "
                         "or use_fluxmem=False.")  # fmt: skip

    method, budget = call_method(state, options)
    for key in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts"):
        if kwargs.get(key) is None and context.get(key) is not None:
            kwargs[key] = _expand_per_sample(state.adapter, context, key, kwargs["input_ids"])
    new = _pruned_prefill(module, state, method, budget, kwargs, cache_name, cache, report)
    if call is not None and cache_name in new and new[cache_name] is not None:
        call["pruned"] = True
    _publish(state, call, report, callback)
    return args, new


def _publish(state: FluxMemState, call: dict | None, report: MemoryReport, callback) -> None:
    """Hand the prefill's report to its call: generate's (published when generate returns), or this
    forward's."""
    if call is not None:
        call["report"] = report
    else:
        state._set_last(report)
    if callback is not None:
        callback(report)


def _expand_per_sample(adapter: ModelAdapter, context: dict, key: str, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-video rows captured from generate(), repeated as generate repeated the samples
    (``num_return_sequences``, beams)."""
    rows = context[key]
    original = context.get("input_ids")
    if original is None or original.shape[0] == input_ids.shape[0]:
        return rows
    factor = input_ids.shape[0] // original.shape[0]
    grid_key = "image_grid_thw" if key == "image_grid_thw" else "video_grid_thw"
    token = adapter.image_token_id if key == "image_grid_thw" else adapter.video_token_id
    grids = context.get(grid_key)
    if grids is None:
        grids = rows
    # Rows per sample by token count, not by runs of tokens: a Qwen3-VL video is several blocks.
    sizes = (grids.prod(-1) // adapter.spatial_merge_size**2).tolist()
    per_sample, row = [], 0
    for count in (original == token).sum(1).tolist():
        start = row
        while count > 0 and row < len(sizes):
            count -= sizes[row]
            row += 1
        per_sample.append(row - start)
    blocks = list(torch.split(rows, per_sample))
    return torch.cat([block for block in blocks for _ in range(factor)])


def call_method(state: FluxMemState, options: dict) -> tuple[Memory, Budget | None]:
    """The memory method and budget of one call: the switch's, with the call's ``memory=``,
    ``budget=`` and FluxMem options on top (FluxMem options on another method are an error)."""
    spec, budget = options.get("memory"), options.get("budget")
    changes = {k: v for k, v in options.items() if k not in ("memory", "budget") and v is not None}
    if spec is None and not changes:
        method = state.method
    else:
        method = get_memory(state.method if spec is None else spec, **changes)
    method.check(temporal_patch_size=state.adapter.temporal_patch_size)
    return method, state.budget if budget is None else Budget.parse(budget)


def _pruned_prefill(model, state: FluxMemState, method: Memory, budget, kwargs: dict, cache_name: str, cache,
                    report: MemoryReport) -> dict:  # fmt: skip
    adapter = state.adapter
    started = time.perf_counter()
    input_ids = kwargs["input_ids"]
    prepared = adapter.prepare(**kwargs)
    pruned = prune_prefill(
        adapter,
        prepared,
        input_ids,
        kwargs.get("attention_mask"),
        kwargs.get("video_grid_thw"),
        method,
        labels=kwargs.get("labels"),
        budget=budget,
    )
    report.videos = pruned.reports
    report.prepare_ms = (time.perf_counter() - started) * 1000

    new = dict(kwargs)
    for key in _DROP_AFTER_PREPARE:
        if key in new:
            new[key] = None
    mask = pruned.attention_mask
    text_positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    new["inputs_embeds"] = pruned.inputs_embeds
    new["attention_mask"] = mask
    new["position_ids"] = hf.full_positions(text_positions, pruned.position_ids)
    if kwargs.get("labels") is not None:
        new["labels"] = pruned.labels
    new.update(adapter.pruned_extras(prepared, pruned))
    if pruned.rope_deltas is not None:
        hf.set_rope_deltas(model, pruned.rope_deltas)

    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        use_cache = getattr(model.config.get_text_config(), "use_cache", True)
    if use_cache and not model.training:
        if cache is None:
            cache = hf.new_cache(model)
            new[cache_name] = cache
        _PREFIXES[cache] = _Prefix(mask, pruned.original_length, mask.shape[1], pruned.rope_deltas)
    return new


def _continue_after_pruned_prefill(prefix: _Prefix, kwargs: dict, past: int) -> dict:
    """A decoding step on a cache that a pruned prefill filled."""
    tokens = kwargs.get("inputs_embeds") if kwargs.get("input_ids") is None else kwargs["input_ids"]
    steps = tokens.shape[1]
    original_past = prefix.original_length + (past - prefix.pruned_length)
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.ndim == 2 and mask.shape[1] != original_past + steps:
        if mask.shape[1] == past + steps:
            return kwargs  # already in the cache's own coordinates
        raise InputError(
            f"attention_mask has {mask.shape[1]} columns but the prompt had {prefix.original_length} tokens "
            f"and {original_past - prefix.original_length + steps} followed; pass the mask generate would pass."
        )
    new = dict(kwargs)
    # Positions continue from the UNPRUNED prompt (the stock rope deltas); computed here, not taken
    # from generate, whose bookkeeping counts the cache's (shorter) length.
    if mask is not None and mask.ndim == 2:
        text = (mask.long().cumsum(-1) - 1)[:, -steps:]
    else:
        text = torch.arange(original_past, original_past + steps, device=tokens.device).expand(tokens.shape[0], -1)
    if prefix.rope_deltas is not None:
        deltas = prefix.rope_deltas.to(text.device)
        if deltas.shape[0] != text.shape[0]:  # beams / several return sequences per sample
            deltas = deltas.repeat_interleave(text.shape[0] // deltas.shape[0], dim=0)
        text = text + deltas
    new["position_ids"] = text.unsqueeze(0).expand(3, -1, -1)
    if mask is not None and mask.ndim == 2:
        new["attention_mask"] = torch.cat(
            [prefix.attention_mask.to(mask.dtype), mask[:, prefix.original_length :]], dim=1
        )
    return new

