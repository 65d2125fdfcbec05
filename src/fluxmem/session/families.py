"""Streaming strategies (:class:`~fluxmem.session.model_ops.StreamOps`) for Qwen families other
than Qwen2.5-VL, registered through ``register_stream_ops`` on import (``fluxmem.session`` imports
this module).

- Qwen2-VL: the base strategy, except that a video's temporal M-RoPE id advances by exactly one per
  grid step whatever the frame rate (Qwen2.5-VL: ``tokens_per_second * seconds_per_grid_step``).
  The layout is still checked against the model's own ``get_rope_index``.
- Qwen3-VL (and MoE): every grid step is its own block ``<t seconds><|vision_start|> tokens
  <|vision_end|>`` (:class:`BlockLayout`): the timestamp text is written as ``Qwen3VLProcessor``
  writes it, each block starts at the current text position and advances it by ``max(H, W)``, so a
  step's positions depend on the lengths of all earlier timestamps. The vision tower's deepstack
  features are kept per step, gathered at the kept cells with the step's long-term merges applied
  (``pruning.merge_like``) and passed to the decoder as ``visual_pos_masks`` /
  ``deepstack_visual_embeds``. The video processor's pixel budget covers the whole clip, so the
  session scales a PER-FRAME budget by the call's frame count (the resize is then the same for a
  grid step and for the whole video).
- Qwen3.5 (and MoE): Qwen3-VL's blocks without deepstack, and a text model with linear-attention
  (recurrent) layers: the cache is snapshotted (keys/values by length, conv/recurrent states by
  copy) and restored in place after each question; a recurrent state cannot forget tokens, so
  under ``max_memory_tokens`` the session prefills its cache again after dropping frames.

Every layout is checked against the model's own processor and ``get_rope_index`` on a probe when a
session starts, so a transformers version writing or numbering the blocks differently fails loudly.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from ..adapters.pruning import merge_like
from ..errors import UnsupportedModelError
from .model_ops import Block, StreamOps, VideoLayout, register_stream_ops


@register_stream_ops
class Qwen2VLStreamOps(StreamOps):
    """Qwen2-VL: temporal position = video start + grid step index."""

    model_types = ("qwen2_vl",)

    def temporal_interval(self, seconds_per_step: torch.Tensor) -> torch.Tensor:
        return torch.tensor(1.0, dtype=torch.float32)  # one position per grid step, whatever the fps


class BlockLayout(VideoLayout):
    """Qwen3-VL / Qwen3.5 layout: grid step ``k`` is ``text(k) <|vision_start|> H*W tokens
    <|vision_end|>`` with ``text(k)`` its timestamp tokens; the text position advances by one per
    text token and by ``max(H, W)`` per visual block. Block starts are computed once, in order."""

    def __init__(self, start: int, grid_hw: tuple[int, int], step_text) -> None:
        super().__init__(start, grid_hw, torch.tensor(1.0), "after_blocks")
        self._step_text = step_text
        self._texts: list[list[int]] = []
        self._starts = [start]  # _starts[k]: position of step k's first token; then the tail

    def _extend(self, steps: int) -> None:
        while len(self._texts) < steps:
            step = len(self._texts)
            text = list(self._step_text(step))
            self._texts.append(text)
            self._starts.append(self._starts[step] + len(text) + 1 + max(self.grid_hw) + 1)

    def text_ids(self, step: int) -> list[int]:
        """Timestamp tokens of grid step ``step``."""
        self._extend(step + 1)
        return self._texts[step]

    def block_start(self, step: int) -> int:
        """Position of grid step ``step``'s first (timestamp) token."""
        self._extend(step + 1)
        return self._starts[step]

    def step_time(self, step: int) -> int:
        """Position of grid step ``step``'s visual tokens (temporal id; spatial ids start there too)."""
        return self.block_start(step) + len(self.text_ids(step)) + 1

    def tail_start(self, steps: int) -> int:
        self._extend(steps)
        return self._starts[steps]

    def max_position(self, steps: int) -> int:
        return self.tail_start(steps) - 1


def _single_frame(record, grid_hw: tuple[int, int]):
    """What :func:`merge_like` reads of a compress result, for one frame."""
    return SimpleNamespace(grid_thw=(1, grid_hw[0], grid_hw[1]), frames=[record])


@register_stream_ops
class Qwen3VLStreamOps(StreamOps):
    """Qwen3-VL and Qwen3-VL-MoE: per-step timestamp blocks and deepstack features."""

    model_types = ("qwen3_vl", "qwen3_vl_moe")

    def __init__(self, model, processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        super().__init__(model, processor, min_pixels=min_pixels, max_pixels=max_pixels)
        video = processor.video_processor
        size = dict(getattr(video, "size", None) or {})
        factor = int(getattr(video, "patch_size", 14)) * int(getattr(video, "merge_size", self.spatial_merge_size))
        tokens = getattr(video, "max_video_tokens", None)
        # per-frame budget: the options, else the processor's floor and its per-frame token ceiling
        self._frame_min = int(min_pixels if min_pixels is not None else size.get("shortest_edge") or factor * factor)
        if max_pixels is not None:
            self._frame_max = int(max_pixels)
        elif tokens:
            self._frame_max = int(tokens) * factor * factor
        else:
            self._frame_max = int(size.get("longest_edge") or 16384 * factor * factor)
        tokenizer = self.tokenizer
        self._vision_start = int(getattr(model.config, "vision_start_token_id", None)
                                 or tokenizer.convert_tokens_to_ids("<|vision_start|>"))  # fmt: skip
        self._vision_end = int(getattr(model.config, "vision_end_token_id", None)
                               or tokenizer.convert_tokens_to_ids("<|vision_end|>"))  # fmt: skip

    # ------------------------------------------------------------ pixels
    def video_kwargs(self, num_frames: int | None = None) -> dict:
        """The clip budget of ``Qwen3VLVideoProcessor`` scaled from a per-frame budget, so that a
        grid step and the whole video are resized alike (its resize compares ``T*h*w`` with the
        budget; ``(T*a)/(T*b)`` is the same float for every T)."""
        frames = int(num_frames) if num_frames else self.temporal_patch_size
        return {
            "do_sample_frames": False,
            "cap_pixels_per_frame": False,
            "size": {"shortest_edge": frames * self._frame_min, "longest_edge": frames * self._frame_max},
        }

    def encode_step_parts(self, pixels: torch.Tensor, grid_thw: torch.Tensor):
        """Tokens and, per deepstack level, the step's ``[H*W, D]`` deepstack features (or None)."""
        device = self.model.device
        output = self.adapter.encode_video_output(pixels.to(device), grid_thw.to(device))
        tokens = torch.cat(output.pooler_output)
        levels = getattr(output, "deepstack_features", None)
        return tokens, ([torch.cat(level) for level in levels] if levels else None)

    # ------------------------------------------------------------ positions
    def timestamp_text(self, step: int, fps: float) -> str:
        """The processor's timestamp of grid step ``step`` for frames sampled at ``fps`` (frame
        ``i`` at ``i / fps`` s; a step's time is the mean of its first and last frame)."""
        size = self.temporal_patch_size
        indices = list(range(step * size, (step + 1) * size))
        calculate = getattr(self.processor, "_calculate_timestamps", None)
        if calculate is not None:
            seconds = calculate(indices, float(fps), size)[0]
        else:
            seconds = (indices[0] / float(fps) + indices[-1] / float(fps)) / 2
        return f"<{seconds:.1f} seconds>"

    def layout(self, head_length: int, grid_hw: tuple[int, int], fps: float) -> VideoLayout:
        """A :class:`BlockLayout`, checked on a 3-step probe against the processor's own video text
        and the model's ``get_rope_index``."""
        layout = BlockLayout(head_length, grid_hw, lambda step: self.encode_text(self.timestamp_text(step, fps)))
        self._check_layout(layout, fps, steps=3)
        return layout

    def _check_layout(self, layout: BlockLayout, fps: float, steps: int) -> None:
        height, width = grid_hw = layout.grid_hw
        factor = self.spatial_merge_size * int(self.model.config.vision_config.patch_size)
        frames = torch.zeros(steps * self.temporal_patch_size, 3, height * factor, width * factor, dtype=torch.uint8)
        placeholder = getattr(self.processor, "video_token", None) or "<|video_pad|>"
        probe = self.offline_inputs(placeholder, frames, fps)
        mine = []
        for step in range(steps):
            mine += layout.text_ids(step) + [self._vision_start] + [self.adapter.video_token_id] * (height * width)
            mine.append(self._vision_end)
        problem = None
        if probe["video_grid_thw"].tolist() != [[steps, height * self.spatial_merge_size, width * self.spatial_merge_size]]:
            problem = f"the probe video was resized to grid {probe['video_grid_thw'].tolist()}"
        elif probe["input_ids"][0].tolist() != mine:
            problem = "the processor writes the per-frame timestamp blocks differently"
        else:
            text_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([[text_id] * layout.start + mine + [text_id] * 3])
            expected, _ = self.adapter.model.model.get_rope_index(
                ids, mm_token_type_ids=self.adapter.mm_token_type_ids(ids), video_grid_thw=probe["video_grid_thw"]
            )
            cells = torch.arange(height * width)
            parts = [self.text_positions(0, layout.start)]
            parts += [self._block_positions(layout, step, cells) for step in range(steps)]
            parts.append(self.text_positions(layout.tail_start(steps), 3))
            if not torch.equal(torch.cat(parts, dim=1), expected[:, 0]):
                problem = "the model numbers the per-frame blocks' positions differently"
        if problem is not None:
            raise UnsupportedModelError(
                f"{self.adapter.family}: {problem} than the streaming session (grid {grid_hw}); use the offline "
                "path (model.generate with use_fluxmem=True)."
            )

    def video_positions(self, layout: VideoLayout, step: int, cells: torch.Tensor) -> torch.Tensor:
        """Every frame is a one-step grid at its block's position: ``(s, s + row, s + col)``."""
        width = layout.grid_hw[1]
        cells = cells.cpu()
        start = layout.step_time(step)
        t = torch.full_like(cells, start)
        return torch.stack([t, cells // width + start, cells % width + start])

    def _block_positions(self, layout: BlockLayout, step: int, cells: torch.Tensor) -> torch.Tensor:
        """``[3, n]`` positions of a step's block: its timestamp and vision start, kept cells, vision end."""
        before = len(layout.text_ids(step)) + 1
        return torch.cat([
            self.text_positions(layout.block_start(step), before),
            self.video_positions(layout, step, cells),
            self.text_positions(layout.step_time(step) + max(layout.grid_hw), 1),
        ], dim=1)  # fmt: skip

    def step_block(self, layout: VideoLayout, step: int, cells: torch.Tensor, features: torch.Tensor,
                   record=None, extras=None) -> Block:  # fmt: skip
        """``timestamp <|vision_start|>`` kept tokens ``<|vision_end|>``, with the kept cells'
        deepstack features (the step's long-term merges applied, as the memory did to the tokens)."""
        before = layout.text_ids(step) + [self._vision_start]
        count = int(cells.numel())
        embeds = torch.cat([
            self.embed(before), features.to(self.model.device, self.model.dtype), self.embed([self._vision_end])
        ])  # fmt: skip
        positions = self._block_positions(layout, step, cells)
        if extras is None:
            return Block(embeds, positions)
        visual = torch.zeros(len(before) + count + 1, dtype=torch.bool)
        visual[len(before) : len(before) + count] = True
        levels = extras
        if record is not None and record.merged_into is not None:
            levels = [merge_like(_single_frame(record, layout.grid_hw), level) for level in levels]
        index = cells.to(levels[0].device)
        return Block(embeds, positions, visual, [level.index_select(0, index) for level in levels])


@register_stream_ops
class Qwen3_5StreamOps(Qwen3VLStreamOps):
    """Qwen3.5 and Qwen3.5-MoE: Qwen3-VL's blocks (no deepstack) and a hybrid cache whose
    linear-attention layers hold a recurrent state: snapshot and restore it, never cut it."""

    model_types = ("qwen3_5", "qwen3_5_moe")
    can_cut = False

    @staticmethod
    def _is_plain_attention(layer) -> bool:
        """A full-attention key/value layer (cut by length); anything else is copied whole."""
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        return isinstance(layer, DynamicLayer) and not isinstance(layer, DynamicSlidingWindowLayer) and not hasattr(
            layer, "recurrent_states"
        )

    @staticmethod
    def _layers(cache):
        layers = getattr(cache, "layers", None)
        if layers is None:
            raise UnsupportedModelError(
                "the streaming session needs a layered cache (DynamicCache) to snapshot the recurrent state."
            )
        return layers

    def cache_bytes(self, cache) -> int:
        if cache is None:
            return 0
        total = 0
        for layer in self._layers(cache):
            tensors = []
            if getattr(layer, "is_initialized", False) and getattr(layer, "keys", None) is not None:
                tensors += [layer.keys, layer.values]
            for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None)):
                tensors += [t for t in (states or {}).values() if t is not None]
            total += sum(t.numel() * t.element_size() for t in tensors)
        return total

    def snapshot(self, cache):
        """``(length, {layer: state})``: attention layers are cut back to ``length``; every other
        layer (linear attention) keeps a deep copy of its whole state."""
        states = {}
        for i, layer in enumerate(self._layers(cache)):
            if not self._is_plain_attention(layer):
                states[i] = copy.deepcopy(vars(layer))
        return self.cache_length(cache), states

    def restore(self, cache, snapshot) -> None:
        """Write the snapshot back into ``cache`` (the same object; the snapshot stays usable)."""
        length, states = snapshot
        for i, layer in enumerate(self._layers(cache)):
            if i in states:
                vars(layer).clear()
                vars(layer).update(copy.deepcopy(states[i]))
            elif getattr(layer, "is_initialized", False):
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]

    def drop(self, cache, start: int, stop: int) -> None:
        if stop > start:
            raise UnsupportedModelError(
                f"{self.adapter.family}'s linear-attention layers keep a recurrent state that cannot forget tokens; "
                "the session prefills its cache again instead of cutting it (can_cut is False)."
            )
