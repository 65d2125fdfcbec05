"""The one seam between fluxmem and transformers.

Every detail fluxmem relies on that transformers could change lives here and nowhere else: the
keyword under which a forward takes its key/value cache, the text model's forward, the rope index
(and where it puts text after a video, :func:`text_after_video`), where rope deltas are kept, the layout of positions, the vision encoder's outputs (deepstack
levels included), placeholder placement, and cache growth, cropping, dropping, snapshots and sizes
through the ``Cache`` and cache-layer API. :func:`check_model` verifies these assumptions on a
model when fluxmem is switched on and raises one :class:`~fluxmem.errors.UnsupportedTransformersError`
naming every mismatch.

The tested range is :data:`TESTED_RANGE` (the range ``pyproject.toml`` admits).
"""

from __future__ import annotations

import inspect
import warnings
from functools import cache

import torch
import transformers
from packaging.version import Version

from ..errors import UnsupportedTransformersError

TESTED_MIN = "5.19"
TESTED_BELOW = "6"
TESTED_RANGE = f">={TESTED_MIN},<{TESTED_BELOW}"
"""The transformers versions fluxmem is tested against (CI runs both ends)."""

CACHE_NAMES = ("cache", "past_key_values")
"""The names a forward has taken its key/value cache under (newest first)."""

DEEPSTACK_ARGUMENTS = ("visual_pos_masks", "deepstack_visual_embeds")


def installed_version() -> str:
    return transformers.__version__


def version_in_range(version: str | None = None) -> bool:
    installed = Version(Version(version or installed_version()).base_version)
    return Version(TESTED_MIN) <= installed < Version(TESTED_BELOW)


def unsupported(problems: list[str], what: str = "fluxmem") -> UnsupportedTransformersError:
    """One error naming the installed version, the tested range and every mismatch."""
    listed = "; ".join(problems)
    return UnsupportedTransformersError(
        f"{what} does not work with the installed transformers {installed_version()} (tested: transformers"
        f"{TESTED_RANGE}): {listed}. Install a tested version: pip install 'transformers{TESTED_RANGE}'."
    )


# ---------------------------------------------------------------------------------- signatures
@cache
def _parameters(function) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def forward_parameters(module) -> tuple[str, ...]:
    """Names of ``module.forward``'s parameters (``self`` excluded), as the class declares them."""
    return tuple(name for name in _parameters(type(module).forward) if name != "self")


def cache_argument(module) -> str | None:
    """The keyword ``module.forward`` takes its key/value cache under (``cache`` from transformers
    5.24, ``past_key_values`` before), read once per class from the forward's signature."""
    params = forward_parameters(module)
    for name in CACHE_NAMES:
        if name in params:
            return name
    return None


def core(model):
    """The multimodal base model (vision tower + language model) of a ``...ForConditionalGeneration``."""
    return model.model


def text_model(model):
    return core(model).language_model


# ---------------------------------------------------------------------------------- encoder
def encode(model, kind: str, pixels: torch.Tensor, grid_thw: torch.Tensor):
    """The stock encoder output for images (``kind="image"``) or videos: ``pooler_output`` a tuple of
    per-input ``[n, D]`` tensors, plus the family's per-token fields (Qwen3-VL: deepstack levels)."""
    getter = core(model).get_image_features if kind == "image" else core(model).get_video_features
    return getter(pixels, grid_thw, return_dict=True)


def pooled(output) -> torch.Tensor:
    """Every visual token of an encoder output, ``[N, D]`` in input order."""
    return torch.cat(tuple(output.pooler_output))


def has_deepstack(model) -> bool:
    return bool(getattr(model.config.vision_config, "deepstack_visual_indexes", None))


def deepstack(output) -> list[torch.Tensor] | None:
    """Per deepstack level, ``[N, D]`` features of every visual token of an encoder output (rows as
    :func:`pooled`); ``None`` when the output has none."""
    if output is None or "deepstack_features" not in output:
        return None
    levels = output["deepstack_features"]
    if not levels:
        return None
    return [torch.cat(tuple(level)) if isinstance(level, (list, tuple)) else level for level in levels]


def encoder_output(like, tokens: torch.Tensor, levels: list[torch.Tensor] | None = None):
    """An encoder output of ``like``'s class holding ``tokens`` (one input) and ``levels``."""
    fields = {"pooler_output": (tokens,)}
    if levels is not None:
        fields["deepstack_features"] = [(level,) for level in levels]
    return type(like)(**fields)


def join_encoder_outputs(per_video: list[list]):
    """One encoder output from per-video lists of chunk outputs (every per-level field joined)."""
    first = per_video[0][0]
    fields = {"pooler_output": tuple(torch.cat([pooled(part) for part in parts]) for parts in per_video)}
    if deepstack(first) is not None:
        count = len(deepstack(first))
        fields["deepstack_features"] = [
            tuple(torch.cat([deepstack(part)[level] for part in parts]) for parts in per_video) for level in range(count)
        ]
    return type(first)(**fields)


# ---------------------------------------------------------------------------------- placement
def embed_tokens(model, ids: torch.Tensor) -> torch.Tensor:
    return model.get_input_embeddings()(ids)


def place_features(model, input_ids: torch.Tensor, image: torch.Tensor | None, video: torch.Tensor | None):
    """Text embeddings with image and video features placed by the model's own placeholder masks
    and ``masked_scatter``; returns ``(embeds, video in embeds' dtype)``."""
    base = core(model)
    embeds = embed_tokens(model, input_ids)
    if image is not None:
        image = image.to(embeds.device, embeds.dtype)
        image_mask, _ = base.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=image)
        embeds = embeds.masked_scatter(image_mask, image)
    if video is not None:
        video = video.to(embeds.device, embeds.dtype)
        _, video_mask = base.get_placeholder_mask(input_ids, inputs_embeds=embeds, video_features=video)
        embeds = embeds.masked_scatter(video_mask, video)
    return embeds, video


# ---------------------------------------------------------------------------------- positions
def modality_types(model, input_ids: torch.Tensor) -> torch.Tensor:
    """0 text, 1 image, 2 video per token (the processor's ``mm_token_type_ids``)."""
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == model.config.image_token_id] = 1
    types[input_ids == model.config.video_token_id] = 2
    return types


def rope_index(model, input_ids: torch.Tensor, *, mm_token_type_ids: torch.Tensor | None = None,
               image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None, attention_mask=None):  # fmt: skip
    """``(M-RoPE positions [3, B, L], rope deltas [B, 1])`` from the model's ``get_rope_index``."""
    if mm_token_type_ids is None:
        mm_token_type_ids = modality_types(model, input_ids)
    options = {"image_grid_thw": image_grid_thw, "video_grid_thw": video_grid_thw, "attention_mask": attention_mask}
    if second_per_grid_ts is not None and "second_per_grid_ts" in _parameters(type(core(model)).get_rope_index):
        options["second_per_grid_ts"] = second_per_grid_ts
    return core(model).get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids, **options)


TEXT_RULES = {
    "after_grid": "the video's first position + max(H, W)",
    "after_max": "one past the largest position the video used",
}
"""Where text after a video may start: the rule transformers 5's Qwen2-VL / Qwen2.5-VL
``get_rope_index`` follows (``after_grid``), and the one those models were trained with
(``after_max``, the original Qwen code's; ``docs/upstream/transformers-qwen2-vl-positions.md``)."""

STOCK_TEXT_RULE = {"qwen2_vl": "after_grid", "qwen2_5_vl": "after_grid"}
"""The rule the installed transformers' ``get_rope_index`` is known to follow, per model type
(:func:`check_model` measures it; a change is reported, never passed over)."""

PROBE_STEPS = 4
"""Grid steps of the probe video: more than its one merged cell, so the two rules differ."""


def text_rule_probe(model) -> dict:
    """A prompt that tells the rules apart: two text tokens, a video of :data:`PROBE_STEPS` grid
    steps of one merged cell (1 s each), two text tokens; ``rope_index``'s keyword arguments."""
    merge = int(model.config.vision_config.spatial_merge_size)
    ids = [0, 0] + [int(model.config.video_token_id)] * PROBE_STEPS + [0, 0]
    return {
        "input_ids": torch.tensor([ids]),
        "video_grid_thw": torch.tensor([[PROBE_STEPS, merge, merge]]),
        "second_per_grid_ts": torch.tensor([1.0]),
    }


def text_rule_of(positions: torch.Tensor) -> tuple[str, str]:
    """``(rule, numbers)`` of :func:`text_rule_probe`'s positions ``[3, 1, L]``: the name in
    :data:`TEXT_RULES` (or ``"unknown"``) and the positions that decide it, in words."""
    rows = positions[:, 0]
    video = rows[:, 2 : 2 + PROBE_STEPS]
    start, largest, after = int(video.min()), int(video.max()), int(rows[0, 2 + PROBE_STEPS])
    numbers = f"video at {start}..{largest}, next text at {after}"
    if after == largest + 1:
        return "after_max", numbers
    if after == start + 1:  # one merged cell: max(H, W) = 1
        return "after_grid", numbers
    return "unknown", numbers


def text_after_video(model) -> tuple[str, str]:
    """Which rule the installed ``get_rope_index`` follows for text after a video (measured)."""
    probe = text_rule_probe(model)
    positions, _ = rope_index(model, probe.pop("input_ids"), **probe)
    return text_rule_of(positions)


def full_positions(text: torch.Tensor, mrope: torch.Tensor) -> torch.Tensor:
    """The ``position_ids`` a Qwen-VL forward takes: a text row ``[B, L]`` on top of the three
    M-RoPE rows ``[3, B, L]`` -> ``[4, B, L]``."""
    return torch.cat([text.unsqueeze(0), mrope], dim=0)


def mrope_rows(position_ids: torch.Tensor) -> torch.Tensor:
    """The three M-RoPE rows of positions a forward received (``[3|4, B, L]``)."""
    return position_ids[-3:]


def set_rope_deltas(model, deltas: torch.Tensor) -> None:
    """Store where text continues after the prompt, as the stock forward does after a prefill."""
    core(model).rope_deltas = deltas


# ---------------------------------------------------------------------------------- language model
def text_forward(model, embeds: torch.Tensor, positions: torch.Tensor, cache, *,
                 visual_mask: torch.Tensor | None = None, deepstack_levels: list[torch.Tensor] | None = None):  # fmt: skip
    """Run the text model on ``embeds [B, L, D]`` at ``positions [3, B, L]`` on top of ``cache``
    (extended in place); returns the last hidden states ``[B, L, D]``. ``visual_mask`` ``[B, L]``
    and ``deepstack_levels`` go to decoders with deepstack inputs."""
    language = text_model(model)
    kwargs = {"inputs_embeds": embeds, "position_ids": positions, "use_cache": True, cache_argument(language): cache}
    if deepstack_levels is not None and visual_mask is not None and bool(visual_mask.any()):
        kwargs[DEEPSTACK_ARGUMENTS[0]] = visual_mask
        kwargs[DEEPSTACK_ARGUMENTS[1]] = deepstack_levels
    return language(**kwargs).last_hidden_state


def logits(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.get_output_embeddings()(hidden)


# ---------------------------------------------------------------------------------- cache
def new_cache(model):
    """A ``DynamicCache`` for ``model`` whose full-attention layers grow in place (see
    :func:`_growing_layer_class`): appending a few tokens or dropping the oldest frames writes into
    a buffer of spare capacity instead of re-allocating the whole cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config())
    growing = _growing_layer_class()
    for layer in _layers(cache):
        if type(layer) is growing.__bases__[0]:
            layer.__class__ = growing
    return cache


@cache
def _growing_layer_class():
    """``DynamicLayer`` whose keys/values are prefix views of buffers with spare capacity (the power
    of two at or above the length, at least 64 tokens; re-allocated only when full): an append
    copies only the new tokens; ``crop`` (a prefix view) works unchanged."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            length = self.keys.shape[-2] if self.keys.numel() else 0
            needed = length + key_states.shape[-2]
            buffers = getattr(self, "fluxmem_buffers", None)
            if buffers is None or buffers[0].shape[-2] < needed or (length and self.keys.data_ptr() != buffers[0].data_ptr()):
                capacity = max(64, 1 << (needed - 1).bit_length())  # the power of two at or above
                fresh = []
                for old, new in ((self.keys, key_states), (self.values, value_states)):
                    buffer = new.new_empty(*new.shape[:-2], capacity, new.shape[-1])
                    if length:
                        buffer[..., :length, :].copy_(old)
                    fresh.append(buffer)
                self.fluxmem_buffers = buffers = tuple(fresh)
            buffers[0][..., length:needed, :].copy_(key_states)
            buffers[1][..., length:needed, :].copy_(value_states)
            self.keys, self.values = buffers[0][..., :needed, :], buffers[1][..., :needed, :]
            return self.keys, self.values

        def reset(self) -> None:
            self.fluxmem_buffers = None
            super().reset()

    return GrowingLayer


def has_recurrent_state(model) -> bool:
    """Whether the text model has linear-attention (recurrent) layers, whose state cannot be cut
    back to a shorter prefix (Qwen3.5)."""
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or ()
    return "linear_attention" in layer_types


def _layers(cache):
    return list(cache.layers)


def _is_recurrent(layer) -> bool:
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    return isinstance(layer, LinearAttentionCacheLayerMixin)


def _is_full_attention(layer) -> bool:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    return isinstance(layer, DynamicLayer) and not isinstance(layer, DynamicSlidingWindowLayer)


def check_cache_layers(cache, *, recurrent_allowed: bool) -> None:
    """Raise unless every layer of ``cache`` is a full-attention key/value layer (or, where
    ``recurrent_allowed``, a linear-attention layer)."""
    layers = getattr(cache, "layers", None)
    bad = [type(layer).__name__ for layer in layers or () if not (_is_full_attention(layer) or (recurrent_allowed and _is_recurrent(layer)))]
    if layers is None or bad:
        raise unsupported([f"the cache holds layers fluxmem cannot cut ({', '.join(sorted(set(bad))) or type(cache).__name__})"],
                          "the streaming session")  # fmt: skip


def cache_length(cache) -> int:
    return cache.get_seq_length() if cache is not None else 0


def _layer_tensors(layer) -> list[torch.Tensor]:
    tensors = []
    buffers = getattr(layer, "fluxmem_buffers", None)
    if buffers is not None and getattr(layer, "keys", None) is not None and layer.keys.data_ptr() == buffers[0].data_ptr():
        tensors += list(buffers)  # a growing layer: its whole capacity is held
    elif getattr(layer, "is_initialized", False) and getattr(layer, "keys", None) is not None:
        tensors += [layer.keys, layer.values]
    if _is_recurrent(layer):
        for states in (layer.conv_states, layer.recurrent_states):
            tensors += [t for t in states.values() if t is not None]
    return tensors


def cache_bytes(cache) -> int:
    if cache is None:
        return 0
    return sum(t.numel() * t.element_size() for layer in _layers(cache) for t in _layer_tensors(layer))


def crop(cache, length: int) -> None:
    """Cut every key/value layer back to its first ``length`` tokens (``Cache.crop`` per layer)."""
    for layer in _layers(cache):
        if _is_full_attention(layer) and getattr(layer, "is_initialized", False):
            extra = layer.get_seq_length() - length
            if extra > 0:
                layer.crop(-extra)


def drop(cache, start: int, stop: int) -> None:
    """Remove cached tokens ``start:stop`` from every key/value layer (oldest frames under a cap;
    the cache API has no call for a middle range, so the layer's key/value tensors are re-sliced:
    in place, moving the later tokens down, for a growing layer (:func:`new_cache`))."""
    if stop <= start:
        return
    for layer in _layers(cache):
        buffers = getattr(layer, "fluxmem_buffers", None)
        if buffers is not None and layer.keys.data_ptr() == buffers[0].data_ptr():
            length = layer.keys.shape[-2]
            for buffer in buffers:
                buffer[..., start : length - (stop - start), :] = buffer[..., stop:length, :].clone()
            end = length - (stop - start)
            layer.keys, layer.values = buffers[0][..., :end, :], buffers[1][..., :end, :]
        elif getattr(layer, "is_initialized", False):
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., stop:, :]], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., stop:, :]], dim=-2)


def snapshot(cache):
    """Something :func:`restore` brings ``cache`` back to: its length, and a copy of every
    recurrent layer's conv / recurrent states."""
    states = {}
    for index, layer in enumerate(_layers(cache)):
        if _is_recurrent(layer):
            states[index] = tuple(
                {k: (None if v is None else v.clone()) for k, v in getattr(layer, name).items()}
                for name in ("conv_states", "recurrent_states")
            ) + (dict(layer.is_conv_states_initialized), dict(layer.is_recurrent_states_initialized))
    return cache_length(cache), states


def restore(cache, saved) -> None:
    """Bring ``cache`` (the same object) back to ``saved``; ``saved`` stays usable."""
    length, states = saved
    crop(cache, length)
    for index, layer in enumerate(_layers(cache)):
        if index in states:
            conv, recurrent, conv_init, recurrent_init = states[index]
            layer.conv_states = {k: (None if v is None else v.clone()) for k, v in conv.items()}
            layer.recurrent_states = {k: (None if v is None else v.clone()) for k, v in recurrent.items()}
            layer.is_conv_states_initialized = dict(conv_init)
            layer.is_recurrent_states_initialized = dict(recurrent_init)


# ---------------------------------------------------------------------------------- processor
def step_seconds(step: int, fps: float, temporal_patch_size: int) -> float:
    """The time Qwen3-VL's processor writes before grid step ``step`` of frames sampled at ``fps``
    (frame ``i`` at ``i / fps`` s; a step's time is the mean of its first and last frame). The
    session checks the text it builds against the processor's own on a probe."""
    first = step * temporal_patch_size
    last = first + temporal_patch_size - 1
    return (first / float(fps) + last / float(fps)) / 2


# ---------------------------------------------------------------------------------- checks
def _probe(model, problems: list[str]) -> None:
    """Two text tokens through the text model: positions accepted and the cache grows by two."""
    language = text_model(model)
    cache = new_cache(model)
    device = next(model.parameters()).device
    ids = torch.tensor([[0, 0]], device=device)
    embeds = embed_tokens(model, ids)
    mrope, _ = rope_index(model, ids)
    if tuple(mrope.shape) != (3, 1, 2) or mrope[:, 0].tolist() != [[0, 1]] * 3:
        problems.append(f"get_rope_index numbers two text tokens {mrope.tolist()} instead of [0, 1] on three rows")
    with torch.no_grad():
        text_forward(model, embeds, mrope, cache)
    if cache_length(cache) != 2:
        problems.append(f"a two-token prefill left {cache_length(cache)} tokens in the cache passed as {cache_argument(language)}=")


def compatibility_problems(model, *, probe: bool = True) -> list[str]:
    """Every assumption fluxmem makes about ``model`` and the installed transformers that fails."""
    return _version_problems() + _model_problems(model, probe)


def _version_problems() -> list[str]:
    if version_in_range():
        return []
    return [f"transformers {installed_version()} is outside the tested range {TESTED_RANGE}"]


def _model_problems(model, probe: bool) -> list[str]:
    problems = []
    if cache_argument(model) is None:
        problems.append(f"{type(model).__name__}.forward takes no key/value cache argument (looked for {' or '.join(CACHE_NAMES)})")
    base = getattr(model, "model", None)
    if base is None:
        return problems + [f"{type(model).__name__} has no .model (vision tower + language model)"]
    for name in ("get_video_features", "get_image_features", "get_placeholder_mask", "get_rope_index", "language_model"):
        if not hasattr(base, name):
            problems.append(f"{type(base).__name__} has no {name}")
    if not hasattr(base, "rope_deltas"):
        problems.append(f"{type(base).__name__} keeps no rope_deltas")
    if hasattr(base, "get_rope_index"):
        params = _parameters(type(base).get_rope_index)
        missing = [p for p in ("input_ids", "mm_token_type_ids", "video_grid_thw", "attention_mask") if p not in params]
        if missing:
            problems.append(f"get_rope_index takes no {', '.join(missing)}")
    language = getattr(base, "language_model", None)
    if language is not None:
        params = forward_parameters(language)
        if cache_argument(language) is None:
            problems.append(f"{type(language).__name__}.forward takes no key/value cache argument")
        if has_deepstack(model):
            missing = [p for p in DEEPSTACK_ARGUMENTS if p not in params]
            if missing:
                problems.append(f"{type(language).__name__}.forward takes no {', '.join(missing)}")
        for p in ("inputs_embeds", "position_ids", "use_cache"):
            if p not in params:
                problems.append(f"{type(language).__name__}.forward takes no {p}")
    if probe and not problems:
        try:
            _probe(model, problems)
        except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
            problems.append(f"the two-token probe failed ({type(error).__name__}: {error})")
    if probe and not problems:
        _check_text_rule(model, problems)
    return problems


def _check_text_rule(model, problems: list[str]) -> None:
    """Where ``get_rope_index`` puts text after a video, against :data:`STOCK_TEXT_RULE`: the other
    known rule is a warning (``positions="transformers"`` then gives it), anything else an error."""
    expected = STOCK_TEXT_RULE.get(getattr(model.config, "model_type", None))
    if expected is None:
        return
    try:
        rule, numbers = text_after_video(model)
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
        problems.append(f"the video position probe failed ({type(error).__name__}: {error})")
        return
    if rule == expected:
        return
    if rule in TEXT_RULES:
        warnings.warn(
            f"transformers {installed_version()} changed where {type(model).__name__}'s get_rope_index puts text after "
            f"a video: {TEXT_RULES[rule]} ({numbers}), no longer {TEXT_RULES[expected]}; positions='transformers' now "
            "follows the new rule, fluxmem's default (original) positions are unchanged.",
            UserWarning, stacklevel=2,
        )  # fmt: skip
        return
    problems.append(f"get_rope_index numbers text after a video by an unknown rule ({numbers}; expected "
                    f"{TEXT_RULES[expected]})")  # fmt: skip


_CHECKED: dict[tuple, list[str]] = {}


def check_model(model, what: str = "fluxmem") -> None:
    """Raise :class:`UnsupportedTransformersError` naming every failed assumption. The signature
    checks and the probe run once per model class and forward (a later call reuses their result)."""
    base = getattr(model, "model", None)
    language = getattr(base, "language_model", None)
    key = tuple(
        (type(part), getattr(type(part), name, None))
        for part, name in ((model, "forward"), (base, "get_rope_index"), (language, "forward"))
    )
    if key not in _CHECKED:
        _CHECKED[key] = _model_problems(model, probe=True)
    problems = _version_problems() + _CHECKED[key]
    if problems:
        raise unsupported(problems, what)


def saved_state_dict(model, state_dict: dict) -> dict | None:
    """``state_dict`` under the names ``save_pretrained`` writes (transformers' checkpoint key
    conversion reversed); None when this transformers has no conversion API."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return None
    return revert_weight_conversion(model, state_dict)


# ------------------------------------------------------------------------------------ building, training
def set_attention(config, implementation: str) -> None:
    """Choose the attention implementation of a model built from ``config`` (``model_class(config)``
    reads it from the config's private attribute; ``from_pretrained`` takes it as an argument)."""
    config._attn_implementation = implementation


def module_from_config(module_class, config, *, dtype):
    """An instance of a transformers sub-module class (e.g. a vision tower) built from ``config`` in
    ``dtype``, as ``from_pretrained`` builds its parts."""
    return module_class._from_config(config, dtype=dtype)


def route_checkpoint_loading(trainer_class, load) -> None:
    """Make ``trainer_class`` (a ``Trainer`` subclass) resume model weights through
    ``load(trainer, checkpoint, model, stock)``, where ``stock(checkpoint, model)`` is the Trainer's
    own loading: the Trainer offers no public hook for it (``_load_from_checkpoint``)."""
    stock = trainer_class._load_from_checkpoint

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        return load(self, resume_from_checkpoint, model, lambda checkpoint, target: stock(self, checkpoint, target))

    trainer_class._load_from_checkpoint = _load_from_checkpoint
