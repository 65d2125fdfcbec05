"""The FluxMem switch on one model instance: ``enable(model)`` and ``use_fluxmem=True``.

It is a forward pre-hook registered on that instance only (no class is patched, other models in
the process are untouched). On a prefill that carries videos it hands the stock forward pruned
``inputs_embeds``, their original positions, the re-padded mask and re-aligned labels; on the
decoding steps that follow it maps ``generate``'s attention mask (which still counts the dropped
tokens) onto the shorter key/value cache. The mapping travels with the cache object, so
``generate``, manual loops and beam expansion all keep working.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..memory import FluxMemConfig
from . import registry
from .base import ModelAdapter
from .pruning import VideoReport, prune_prefill

logger = logging.getLogger(__name__)

# Keyword arguments the switch takes out of forward/generate calls.
CALL_OPTIONS = ("use_fluxmem", "short_frames", "medium_frames", "direct_drop_sim", "pair_sim_threshold")
_STATE = "_fluxmem_state"
# Options given to generate(), seen by every forward call it makes (per thread / task).
_CALL_OPTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("fluxmem_call_options", default=None)
_PREFIX = "_fluxmem_prefix"
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
class FluxMemState:
    """What the switch keeps on a model instance."""

    adapter: ModelAdapter
    config: FluxMemConfig
    default_active: bool
    handle: torch.utils.hooks.RemovableHandle | None = None
    positional: tuple[str, ...] = ()
    last_reports: list[VideoReport] = field(default_factory=list)
    last_prefill_prepare_ms: float = 0.0

    def summary(self) -> dict:
        """Visual tokens before and after, per tier, over the videos of the last prefill."""
        tokens = sum(r.tokens for r in self.last_reports)
        kept = sum(r.kept for r in self.last_reports)
        tiers: dict[str, dict[str, int]] = {}
        for report in self.last_reports:
            for tier, entry in report.tiers.items():
                total = tiers.setdefault(tier, {"frames": 0, "tokens": 0, "kept": 0})
                for key, value in entry.items():
                    total[key] += value
        return {
            "videos": len(self.last_reports),
            "tokens": tokens,
            "kept": kept,
            "retained_fraction": kept / tokens if tokens else 1.0,
            "tiers": tiers,
            "memory_ms": round(sum(r.memory_ms for r in self.last_reports), 3),
        }


@dataclass
class _PrefixState:
    """How a pruned prefill's cache relates to the caller's (unpruned) sequence."""

    attention_mask: torch.Tensor  # [B, L'] mask of the pruned prefill
    original_length: int  # L
    pruned_length: int  # L'


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


def attach(model, config: FluxMemConfig | None = None, *, active: bool = True) -> FluxMemState:
    """Install the switch on ``model`` (idempotent: a second call updates the settings)."""
    model = unwrap(model)
    adapter = registry.adapter_for(model)
    config = config or FluxMemConfig()
    config.grid_steps(adapter.temporal_patch_size)  # reject impossible settings now, not mid-call
    state = getattr(model, _STATE, None)
    if state is not None:
        state.config, state.default_active = config, active
        return state
    params = list(inspect.signature(type(model).forward).parameters)[1:]
    state = FluxMemState(adapter=adapter, config=config, default_active=active, positional=tuple(params))
    state.handle = model.register_forward_pre_hook(_pre_forward, with_kwargs=True)
    object.__setattr__(model, _STATE, state)
    object.__setattr__(model, "generate", _generate_taking_options(model.generate))
    return state


def detach(model) -> None:
    model = unwrap(model)
    state = getattr(model, _STATE, None)
    if state is not None:
        state.handle.remove()
        object.__delattr__(model, _STATE)
        model.__dict__.pop("generate", None)


def _generate_taking_options(generate):
    """``generate`` that accepts the FluxMem call options and passes them to the forward hook."""

    @functools.wraps(generate)
    def generate_with_fluxmem(*args, **kwargs):
        options = {key: kwargs.pop(key) for key in CALL_OPTIONS if key in kwargs}
        # generate() encodes the pixels itself and drops the grids before the prefill: keep them.
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        for key in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts"):
            if kwargs.get(key) is not None:
                options[key] = kwargs[key]
        if input_ids is not None:
            options["input_ids"] = input_ids
        token = _CALL_OPTIONS.set(options)
        try:
            return generate(*args, **kwargs)
        finally:
            _CALL_OPTIONS.reset(token)

    return generate_with_fluxmem


def _pre_forward(module, args, kwargs):
    state: FluxMemState = getattr(module, _STATE)
    if args:
        kwargs = {**dict(zip(state.positional, args)), **kwargs}
        args = ()
    context = dict(_CALL_OPTIONS.get() or {})
    options = {key: context[key] for key in CALL_OPTIONS if key in context}
    options.update({key: kwargs.pop(key) for key in CALL_OPTIONS if key in kwargs})
    use = options.pop("use_fluxmem", None)

    cache = kwargs.get("past_key_values")
    past = cache.get_seq_length() if cache is not None else 0
    prefix = getattr(cache, _PREFIX, None) if cache is not None else None
    if prefix is not None and past > 0:
        return args, _continue_after_pruned_prefill(state, prefix, kwargs, past)

    active = state.default_active if use is None else bool(use)
    state.last_reports = []
    has_video = kwargs.get("pixel_values_videos") is not None or (kwargs.get("mm_encoder_outputs") or {}).get("video")
    if not active or past > 0 or not has_video:
        return args, kwargs  # text-only prompts and images run unpruned
    if kwargs.get("input_ids") is None:
        logger.warning("FluxMem needs input_ids to find the videos in the prompt; running this call unpruned.")
        return args, kwargs

    config = state.config.replace(**{k: v for k, v in options.items() if v is not None}) if options else state.config
    config.grid_steps(state.adapter.temporal_patch_size)
    for key in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts"):
        if kwargs.get(key) is None and context.get(key) is not None:
            kwargs[key] = _expand_per_sample(state.adapter, context, key, kwargs["input_ids"])
    return args, _pruned_prefill(module, state, config, kwargs, cache)


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


def _pruned_prefill(model, state: FluxMemState, config: FluxMemConfig, kwargs: dict, cache) -> dict:
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
        config,
        labels=kwargs.get("labels"),
    )
    state.last_reports = pruned.reports
    state.last_prefill_prepare_ms = (time.perf_counter() - started) * 1000

    new = dict(kwargs)
    for key in _DROP_AFTER_PREPARE:
        if key in new:
            new[key] = None
    mask = pruned.attention_mask
    text_positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    new["inputs_embeds"] = pruned.inputs_embeds
    new["attention_mask"] = mask
    new["position_ids"] = torch.cat([text_positions.unsqueeze(0), pruned.position_ids], dim=0)
    if kwargs.get("labels") is not None:
        new["labels"] = pruned.labels
    new.update(adapter.pruned_extras(prepared, pruned))
    if prepared.rope_deltas is not None:
        adapter.remember_rope_deltas(prepared.rope_deltas)

    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        use_cache = getattr(model.config.get_text_config(), "use_cache", True)
    if use_cache and not model.training:
        if cache is None:
            cache = adapter.new_cache()
            new["past_key_values"] = cache
        object.__setattr__(cache, _PREFIX, _PrefixState(mask, pruned.original_length, mask.shape[1]))
    return new


def _continue_after_pruned_prefill(state: FluxMemState, prefix: _PrefixState, kwargs: dict, past: int) -> dict:
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
    if new.get("position_ids") is None:
        deltas = state.adapter.rope_deltas()
        if mask is not None and mask.ndim == 2:
            text = (mask.long().cumsum(-1) - 1)[:, -steps:]
        else:
            text = torch.arange(original_past, original_past + steps, device=tokens.device).expand(tokens.shape[0], -1)
        if deltas is not None:
            text = text + deltas.to(text.device)
        new["position_ids"] = text.unsqueeze(0).expand(3, -1, -1)
    if mask is not None and mask.ndim == 2:
        new["attention_mask"] = torch.cat(
            [prefix.attention_mask.to(mask.dtype), mask[:, prefix.original_length :]], dim=1
        )
    return new
