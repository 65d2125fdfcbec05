"""Family-specific pieces of the streaming session, behind one small strategy object.

The session (``session.py``) is written once against :class:`StreamOps`; each model family
provides a subclass, registered by ``config.model_type``. What a family decides:

* how one temporal grid step of raw frames becomes pixel patches (:meth:`StreamOps.step_pixels`)
  and visual tokens (:meth:`StreamOps.encode_step`), and how the equivalent offline processor
  inputs are built (:meth:`StreamOps.offline_inputs`);
* the prompt layout around the video (:meth:`StreamOps.prompt_ids`): the head (everything before
  the first visual token, independent of the question) and the tail (everything after the video);
* positions: of a grid step's kept tokens (:meth:`StreamOps.step_block`), of the tail, and where
  decoding continues (:class:`VideoLayout`);
* how to run the language model on given embeddings and positions with a cache
  (:meth:`StreamOps.forward`), and how to snapshot / restore / cut that cache.

Qwen2.5-VL is implemented here; the other families live in ``families.py``: Qwen3-VL overrides
the layout and :meth:`step_block` (timestamp text and a vision block per grid step) and carries
per-step deepstack features (:meth:`StreamOps.encode_step_parts`, :class:`Block`), Qwen3.5 overrides
the cache methods to snapshot its recurrent state instead of cropping keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..adapters import registry
from ..errors import InputError, UnsupportedModelError


@dataclass
class VideoLayout:
    """Where the video sits in the prompt and how its positions are numbered."""

    start: int
    """Number of head tokens = first position of the video."""
    grid_hw: tuple[int, int]
    """Merged-token grid of one step."""
    interval: torch.Tensor
    """float32 scalar: temporal position step per grid step (``tokens_per_second * second_per_grid_ts``)."""
    text_rule: str
    """How text after the video is numbered: ``"after_grid"`` (start + max(H, W), transformers 5's
    ``get_rope_index``) or ``"after_max"`` (max position + 1, the original Qwen code)."""

    def step_time(self, step: int) -> int:
        """Temporal position of grid step ``step`` (the model's own float32 arithmetic)."""
        return int((torch.tensor([step]) * self.interval).long()[0]) + self.start

    def max_position(self, steps: int) -> int:
        """Largest position of a video with ``steps`` grid steps (dropped tokens included)."""
        height, width = self.grid_hw
        return max(self.step_time(steps - 1), self.start + height - 1, self.start + width - 1)

    def tail_start(self, steps: int) -> int:
        if self.text_rule == "after_grid":
            return self.start + max(self.grid_hw)
        return self.max_position(steps) + 1


@dataclass
class Block:
    """Language-model input rows: embeddings ``[n, D]`` and M-RoPE positions ``[3, n]``, plus, for
    families with deepstack features (Qwen3-VL), which rows are visual tokens and, per deepstack
    level, the features ``[n_visual, D]`` of those rows in order."""

    embeds: torch.Tensor
    positions: torch.Tensor
    visual: torch.Tensor | None = None
    """bool ``[n]``; ``None``: no row carries deepstack features."""
    deepstack: list[torch.Tensor] | None = None

    @staticmethod
    def join(blocks: list[Block]) -> Block:
        """The blocks one after the other (deepstack rows concatenated per level)."""
        embeds = torch.cat([b.embeds for b in blocks])
        positions = torch.cat([b.positions for b in blocks], dim=1)
        if all(b.deepstack is None for b in blocks):
            return Block(embeds, positions)
        visual = torch.cat([
            b.visual.cpu() if b.visual is not None else torch.zeros(b.embeds.shape[0], dtype=torch.bool) for b in blocks
        ])  # fmt: skip
        levels = {len(b.deepstack) for b in blocks if b.deepstack is not None}
        if len(levels) != 1:
            raise ValueError("blocks disagree on the number of deepstack levels")
        deepstack = [
            torch.cat([b.deepstack[level] for b in blocks if b.deepstack is not None]) for level in range(levels.pop())
        ]
        return Block(embeds, positions, visual, deepstack)


@dataclass
class PromptParts:
    head: list[int]
    tail: list[int]


class StreamOps:
    """Base strategy; see the module docstring. One instance per session."""

    model_types: tuple[str, ...] = ()

    def __init__(self, model, processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        self.model = model
        self.processor = processor
        self.adapter = registry.adapter_for(model)
        if not self.adapter.steps_are_independent:
            raise UnsupportedModelError(
                f"{self.adapter.family}'s vision tower attends across temporal grid steps; the streaming session "
                "needs step-wise encoding."
            )
        self.temporal_patch_size = self.adapter.temporal_patch_size
        self.spatial_merge_size = self.adapter.spatial_merge_size
        size = dict(getattr(processor.video_processor, "size", None) or {})
        size = {k: v for k, v in size.items() if k in ("shortest_edge", "longest_edge") and v}
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        self.size = size

    # ------------------------------------------------------------ pixels
    def video_kwargs(self, num_frames: int | None = None) -> dict:
        """Video-processor options shared by the step-wise and the offline path: a FIXED per-frame
        pixel budget (no total-video budget, which would depend on the frame count). ``num_frames``
        (the frames of the call) is for processors whose budget covers the whole clip (Qwen3-VL)."""
        kwargs = {"do_sample_frames": False, "cap_pixels_per_frame": False}
        if self.size:
            kwargs["size"] = dict(self.size)
        return kwargs

    def step_pixels(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel patches and ``grid_thw`` ([1, 3], in patches) of one grid step of raw frames
        (uint8 ``[temporal_patch_size, 3, H, W]``), exactly as the processor makes them."""
        out = self.processor.video_processor(videos=[frames], return_tensors="pt", **self.video_kwargs(int(frames.shape[0])))
        return out["pixel_values_videos"], out["video_grid_thw"]

    def offline_inputs(self, text: str, frames: torch.Tensor | None, fps: float):
        """Processor inputs for ``text`` (a rendered chat prompt) and the video ``frames``
        (uint8 ``[T, 3, H, W]``, T a multiple of the temporal patch size) sampled at ``fps``."""
        if frames is None:
            return self.processor(text=[text], padding=True, return_tensors="pt")
        count, _, height, width = frames.shape
        metadata = {
            "total_num_frames": count,
            "fps": float(fps),
            "frames_indices": list(range(count)),
            "duration": count / float(fps),
            "width": width,
            "height": height,
        }
        videos_kwargs = {**self.video_kwargs(count), "video_metadata": [metadata]}
        return self.processor(text=[text], videos=[frames], padding=True, return_tensors="pt", videos_kwargs=videos_kwargs)

    def encode_step(self, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``[H*W, D]`` of one grid step, in raster order of the merged grid."""
        device = self.model.device
        return self.adapter.encode_video(pixels.to(device), grid_thw.to(device))

    def encode_step_parts(self, pixels: torch.Tensor, grid_thw: torch.Tensor):
        """``(tokens [H*W, D], extras)``: the visual tokens the memory gets and whatever else the
        family needs per step later (kept by the session, handed back to :meth:`step_block`).
        Qwen2.5-VL: no extras."""
        return self.encode_step(pixels, grid_thw), None

    def merged_grid(self, grid_thw: torch.Tensor) -> tuple[int, int]:
        _, height, width = self.adapter.merged_grid(grid_thw[0].tolist())
        return height, width

    # ------------------------------------------------------------ prompt
    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def render(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict]) -> PromptParts:
        """Split the rendered prompt at the video placeholder: head and tail token ids."""
        text = self.render(messages)
        placeholder = getattr(self.processor, "video_token", None) or "<|video_pad|>"
        if text.count(placeholder) != 1:
            raise InputError(
                f"the chat template should place one video placeholder {placeholder!r} in the prompt, found "
                f"{text.count(placeholder)}; the session's prompt must hold exactly one video."
            )
        head, tail = text.split(placeholder)
        return PromptParts(self.encode_text(head), self.encode_text(tail))

    # ------------------------------------------------------------ positions
    def layout(self, head_length: int, grid_hw: tuple[int, int], fps: float) -> VideoLayout:
        """The video layout for a head of ``head_length`` tokens, checked against the model's own
        position code (``get_rope_index``) so that a transformers version numbering positions
        differently fails loudly instead of answering slightly wrong."""
        seconds_per_step = torch.tensor([self.temporal_patch_size / float(fps)], dtype=torch.float32)
        interval = self.temporal_interval(seconds_per_step)
        candidates = [VideoLayout(head_length, grid_hw, interval, rule) for rule in ("after_grid", "after_max")]
        # probes: one step, and enough steps for the temporal positions to pass the spatial ones
        interval_value = float(interval)
        long_probe = 2 if interval_value <= 0 else min(256, math.ceil(max(grid_hw) / interval_value) + 2)
        for steps in (1, long_probe):
            expected = self._rope_reference(head_length, steps, grid_hw, seconds_per_step)
            candidates = [c for c in candidates if torch.equal(self._positions_for_probe(c, steps, 3), expected)]
        if not candidates:
            raise UnsupportedModelError(
                f"{self.adapter.family}: the installed transformers numbers video positions in a way the streaming "
                "session does not reproduce; use the offline path (model.generate with use_fluxmem=True)."
            )
        return candidates[0]

    def temporal_interval(self, seconds_per_step: torch.Tensor) -> torch.Tensor:
        """How far the temporal position moves per grid step (Qwen2.5-VL: tokens_per_second x the
        step's seconds; a family that counts steps overrides this)."""
        tokens_per_second = getattr(self.model.config.vision_config, "tokens_per_second", 1)
        return tokens_per_second * seconds_per_step[0]

    def _rope_reference(self, head_length, steps, grid_hw, seconds_per_step) -> torch.Tensor:
        height, width = grid_hw
        merge = self.spatial_merge_size
        text_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = [text_id] * head_length + [self.adapter.video_token_id] * (steps * height * width) + [text_id] * 3
        ids = torch.tensor([ids])
        grid = torch.tensor([[steps, height * merge, width * merge]])
        positions, _ = self.adapter.model.model.get_rope_index(
            ids, mm_token_type_ids=self.adapter.mm_token_type_ids(ids), video_grid_thw=grid, second_per_grid_ts=seconds_per_step
        )
        return positions[:, 0]

    def _positions_for_probe(self, layout: VideoLayout, steps: int, tail: int) -> torch.Tensor:
        cells = torch.arange(layout.grid_hw[0] * layout.grid_hw[1])
        parts = [torch.arange(layout.start).expand(3, -1)]
        parts += [self.video_positions(layout, step, cells) for step in range(steps)]
        parts.append(self.text_positions(layout.tail_start(steps), tail))
        return torch.cat(parts, dim=1)

    def video_positions(self, layout: VideoLayout, step: int, cells: torch.Tensor) -> torch.Tensor:
        """``[3, n]`` M-RoPE positions of grid step ``step``'s cells (raster indices ``cells``)."""
        width = layout.grid_hw[1]
        cells = cells.cpu()
        t = torch.full_like(cells, layout.step_time(step))
        return torch.stack([t, cells // width + layout.start, cells % width + layout.start])

    @staticmethod
    def text_positions(start: int, length: int) -> torch.Tensor:
        return torch.arange(start, start + length).expand(3, -1)

    # ------------------------------------------------------------ language model
    def embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.model.device)
        return self.model.get_input_embeddings()(ids)

    def step_block(self, layout: VideoLayout, step: int, cells: torch.Tensor, features: torch.Tensor,
                   record=None, extras=None) -> Block:  # fmt: skip
        """The :class:`Block` grid step ``step`` contributes: its kept ``cells`` and their
        ``features``; ``record`` is the step's :class:`~fluxmem.memory.FrameRecord` (its merges) and
        ``extras`` what :meth:`encode_step_parts` returned for it. Qwen2.5-VL: just the visual tokens."""
        return Block(features, self.video_positions(layout, step, cells))

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, *,
                visual_mask: torch.Tensor | None = None, deepstack: list[torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """Run the language model on ``embeds [L, D]`` at ``positions [3, L]`` on top of ``cache``
        (extended in place); returns the float32 logits of the last token. Calls the decoder
        directly, so the FluxMem switch's forward hook (on the top-level model) never sees it.
        ``visual_mask`` (bool ``[L]``) and ``deepstack`` (per level ``[n_visual, D]``) go to decoders
        with deepstack inputs (Qwen3-VL's ``visual_pos_masks`` / ``deepstack_visual_embeds``)."""
        device, dtype = self.model.device, self.model.dtype
        embeds = embeds.to(device, dtype).unsqueeze(0)
        positions = positions.to(device).unsqueeze(1)
        extra = {}
        if deepstack is not None and visual_mask is not None and bool(visual_mask.any()):
            extra = {
                "visual_pos_masks": visual_mask.to(device).unsqueeze(0),
                "deepstack_visual_embeds": [level.to(device, dtype) for level in deepstack],
            }
        out = self.model.model.language_model(
            inputs_embeds=embeds, position_ids=positions, past_key_values=cache, use_cache=True, **extra
        )
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()[0]

    def forward_block(self, block: Block, cache) -> torch.Tensor:
        """:meth:`forward` on a :class:`Block`."""
        return self.forward(block.embeds, block.positions, cache, visual_mask=block.visual, deepstack=block.deepstack)

    # ------------------------------------------------------------ cache
    can_cut: bool = True
    """Whether :meth:`drop` can remove tokens from the middle of the cache (False for recurrent
    state: the session then re-prefills its cache after dropping frames under a cap)."""

    def new_cache(self):
        return self.adapter.new_cache()

    @staticmethod
    def _layers(cache):
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        layers = getattr(cache, "layers", None)
        if layers is None or not all(
            isinstance(layer, DynamicLayer) and not isinstance(layer, DynamicSlidingWindowLayer) for layer in layers
        ):
            raise UnsupportedModelError(
                "the streaming session can only cut full-attention key/value caches (DynamicCache); this model's "
                "cache needs a family-specific snapshot (override StreamOps.snapshot / restore / drop)."
            )
        return layers

    def cache_length(self, cache) -> int:
        return cache.get_seq_length() if cache is not None else 0

    def cache_bytes(self, cache) -> int:
        if cache is None:
            return 0
        total = 0
        for layer in self._layers(cache):
            if getattr(layer, "is_initialized", False):
                total += layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
        return total

    def snapshot(self, cache):
        """Something :meth:`restore` can bring the cache back to (here: its length)."""
        return self.cache_length(cache)

    def restore(self, cache, snapshot) -> None:
        for layer in self._layers(cache):
            if getattr(layer, "is_initialized", False):
                layer.keys = layer.keys[..., :snapshot, :]
                layer.values = layer.values[..., :snapshot, :]

    def drop(self, cache, start: int, stop: int) -> None:
        """Remove cached tokens ``start:stop`` (the oldest long-term frames under a cap)."""
        if stop <= start:
            return
        for layer in self._layers(cache):
            if getattr(layer, "is_initialized", False):
                layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., stop:, :]], dim=-2)
                layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., stop:, :]], dim=-2)


class Qwen2_5_VLStreamOps(StreamOps):
    """Qwen2.5-VL: every piece is the base implementation (visual tokens only, M-RoPE, DynamicCache)."""

    model_types = ("qwen2_5_vl",)


_OPS: dict[str, type[StreamOps]] = {}


def register_stream_ops(ops_class: type[StreamOps]) -> type[StreamOps]:
    for model_type in ops_class.model_types:
        _OPS[model_type] = ops_class
    return ops_class


register_stream_ops(Qwen2_5_VLStreamOps)


def stream_ops_for(model, processor, **options) -> StreamOps:
    """The streaming strategy for ``model``; a clear error for families not supported yet."""
    from ..adapters.switch import unwrap

    model = unwrap(model)
    adapter = registry.adapter_for(model)  # unsupported families fail here with the adapter's message
    ops_class = _OPS.get(model.config.model_type)
    if ops_class is None:
        raise UnsupportedModelError(
            f"the streaming session does not support {adapter.family} yet (supported: "
            f"{', '.join(sorted(_OPS))}); use the offline path, model.generate(..., use_fluxmem=True)."
        )
    return ops_class(model, processor, **options)
