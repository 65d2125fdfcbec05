"""What the streaming session needs of a model family, behind one strategy object per family.

The session (``fluxmem.session``) is written once against :class:`StreamOps`; each family's
adapter names its strategy (``ModelAdapter.streaming``), so a family is found through the one
registry (``adapters/registry.py``). What a family decides:

* how one temporal grid step of raw frames becomes pixel patches (:meth:`StreamOps.step_pixels`)
  and visual tokens (:meth:`StreamOps.encode_step_parts`), and how the equivalent offline processor
  inputs are built (:meth:`StreamOps.offline_inputs`);
* the prompt layout around the video (:meth:`StreamOps.prompt_ids`): the head (everything before
  the first visual token, independent of the question) and the tail (everything after the video);
* positions: of a grid step's kept tokens (:meth:`StreamOps.step_block`), of the tail, and where
  decoding continues (:class:`VideoLayout`), checked on a probe against the family's numbering by
  the session's position rule (the adapter's ``rope_positions``: the original rule by default,
  ``get_rope_index`` with ``positions="transformers"``);
* how to run the language model on given embeddings and positions with a cache
  (:meth:`StreamOps.forward`) and the cache policy: cut by length, or (recurrent state, Qwen3.5)
  snapshot and restore (:attr:`StreamOps.can_cut`). Every transformers call goes through ``hf``.

- Qwen2.5-VL: the base strategy. Qwen2-VL: a temporal step of exactly one per grid step.
- Qwen3-VL (and MoE): every grid step is its own block ``<t seconds><|vision_start|> tokens
  <|vision_end|>`` (:class:`BlockLayout`), numbered as ``get_rope_index`` does; the vision tower's
  deepstack features are kept per step, gathered at the kept cells with the step's long-term merges
  applied (``memory.merge_kept``). The video processor's pixel budget covers the whole clip, so a
  PER-FRAME budget is scaled by the call's frame count.
- Qwen3.5 (and MoE): Qwen3-VL's blocks without deepstack, and a text model with linear-attention
  (recurrent) layers: the cache is snapshotted and restored after each question; a recurrent state
  cannot forget tokens, so under ``max_memory_tokens`` the session prefills its cache again after
  dropping frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..errors import InputError, UnsupportedModelError
from ..memory import merge_kept
from . import hf


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

    def __init__(self, adapter, processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        self.adapter = adapter
        self.model = adapter.model
        self.processor = processor
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

    def encode_step_parts(self, pixels: torch.Tensor, grid_thw: torch.Tensor):
        """``(tokens [H*W, D], extras)`` of one grid step: the visual tokens the memory gets (raster
        order of the merged grid) and the per-token extras the family needs later (kept by the
        session, handed back to :meth:`step_block`): per deepstack level ``[H*W, D]``, or ``None``."""
        device = self.model.device
        output = self.adapter.encode_video_output(pixels.to(device), grid_thw.to(device))
        return hf.pooled(output), hf.deepstack(output)

    def merged_grid(self, grid_thw: torch.Tensor) -> tuple[int, int]:
        _, height, width = self.adapter.merged_grid(grid_thw[0].tolist())
        return height, width

    # ------------------------------------------------------------ prompt
    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, text: str) -> PromptParts:
        """Split a rendered prompt at the video placeholder: head and tail token ids."""
        placeholder = getattr(self.processor, "video_token", None) or "<|video_pad|>"
        if text.count(placeholder) != 1:
            raise InputError(
                f"the chat template should place one video placeholder {placeholder!r} in the prompt, found "
                f"{text.count(placeholder)}; the session's prompt must hold exactly one video."
            )
        head, tail = text.split(placeholder)
        return PromptParts(self.encode_text(head), self.encode_text(tail))

    # ------------------------------------------------------------ positions
    def layout(self, head_length: int, grid_hw: tuple[int, int], fps: float, positions: str = "original",
               frame_size: tuple[int, int] | None = None) -> VideoLayout:  # fmt: skip
        """The video layout for a head of ``head_length`` tokens, checked against the family's own
        numbering by the rule ``positions`` (the adapter's ``rope_positions``) so that a
        transformers version numbering positions differently fails loudly instead of answering
        slightly wrong. ``frame_size``: the raw frames' ``(height, width)``, for families whose
        check runs the processor."""
        seconds_per_step = torch.tensor([self.temporal_patch_size / float(fps)], dtype=torch.float32)
        interval = self.temporal_interval(seconds_per_step)
        candidates = [VideoLayout(head_length, grid_hw, interval, rule) for rule in ("after_grid", "after_max")]
        # probes: one step, and enough steps for the temporal positions to pass the spatial ones
        interval_value = float(interval)
        long_probe = 2 if interval_value <= 0 else min(256, math.ceil(max(grid_hw) / interval_value) + 2)
        for steps in (1, long_probe):
            expected = self._rope_reference(head_length, steps, grid_hw, seconds_per_step, positions)
            candidates = [c for c in candidates if torch.equal(self._positions_for_probe(c, steps, 3), expected)]
        if not candidates:
            raise hf.unsupported([
                (f"{self.adapter.family}'s {positions!r} positions number a video in a way the session does not "
                "reproduce (the offline path, model.generate with use_fluxmem=True, still works)")
            ], "the streaming session")  # fmt: skip
        return candidates[0]

    def temporal_interval(self, seconds_per_step: torch.Tensor) -> torch.Tensor:
        """How far the temporal position moves per grid step (the adapter's ``temporal_interval``:
        Qwen2.5-VL tokens_per_second x the step's seconds, Qwen2-VL one), float32."""
        return torch.as_tensor(self.adapter.temporal_interval(seconds_per_step[0]), dtype=torch.float32)

    def _rope_reference(self, head_length, steps, grid_hw, seconds_per_step, positions: str = "original") -> torch.Tensor:
        height, width = grid_hw
        merge = self.spatial_merge_size
        text_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = [text_id] * head_length + [self.adapter.video_token_id] * (steps * height * width) + [text_id] * 3
        ids = torch.tensor([ids])
        grid = torch.tensor([[steps, height * merge, width * merge]])
        numbered, _ = self.adapter.rope_positions(ids, rule=positions, video_grid_thw=grid, second_per_grid_ts=seconds_per_step)
        return numbered[:, 0]

    def _positions_for_probe(self, layout: VideoLayout, steps: int, tail: int) -> torch.Tensor:
        cells = torch.arange(layout.grid_hw[0] * layout.grid_hw[1])
        parts = [torch.arange(layout.start).expand(3, -1)]
        parts += [self.video_positions(layout, step, cells) for step in range(steps)]
        parts.append(self.text_positions(layout.tail_start(steps), tail))
        return torch.cat(parts, dim=1)

    def text_rows(self, layout: VideoLayout, step: int) -> int:
        """Rows grid step ``step`` puts in the language model besides its kept visual tokens
        (Qwen2-VL / Qwen2.5-VL: none)."""
        return 0

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

    def final_extras(self, grid_hw: tuple[int, int], cells: torch.Tensor, record, extras):
        """What a FINAL frame keeps of its per-token extras (families without extras: ``None``)."""
        return

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, *,
                visual_mask: torch.Tensor | None = None, deepstack: list[torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """Run the language model on ``embeds [L, D]`` at ``positions [3, L]`` on top of ``cache``
        (extended in place); returns the float32 logits of the last token. Calls the decoder
        directly, so the FluxMem switch's forward hook (on the top-level model) never sees it.
        ``visual_mask`` (bool ``[L]``) and ``deepstack`` (per level ``[n_visual, D]``) go to decoders
        with deepstack inputs (Qwen3-VL's ``visual_pos_masks`` / ``deepstack_visual_embeds``).
        Zero rows (grid steps that kept no token) change nothing and return ``None``."""
        if embeds.shape[0] == 0:
            return None
        device, dtype = self.model.device, self.model.dtype
        levels = None
        if deepstack is not None and visual_mask is not None:
            levels = [level.to(device, dtype) for level in deepstack]
            visual_mask = visual_mask.to(device).unsqueeze(0)
        hidden = hf.text_forward(
            self.model, embeds.to(device, dtype).unsqueeze(0), positions.to(device).unsqueeze(1), cache,
            visual_mask=visual_mask, deepstack_levels=levels,
        )  # fmt: skip
        return hf.logits(self.model, hidden[:, -1]).float()[0]

    def forward_block(self, block: Block, cache) -> torch.Tensor:
        """:meth:`forward` on a :class:`Block`."""
        return self.forward(block.embeds, block.positions, cache, visual_mask=block.visual, deepstack=block.deepstack)

    # ------------------------------------------------------------ cache
    @property
    def can_cut(self) -> bool:
        """The cache policy: True when every cached token can be cut out by length (key/value
        layers); False for a text model with recurrent (linear-attention) layers, whose state is
        snapshotted and restored instead, and re-prefilled after frames are dropped under a cap."""
        return not hf.has_recurrent_state(self.model)
    """Whether :meth:`drop` can remove tokens from the middle of the cache (False for recurrent
    state: the session then re-prefills its cache after dropping frames under a cap)."""

    def new_cache(self):
        return hf.new_cache(self.model)

    def cache_length(self, cache) -> int:
        return hf.cache_length(cache)

    def cache_bytes(self, cache) -> int:
        return hf.cache_bytes(cache)

    def snapshot(self, cache):
        """Something :meth:`restore` can bring the cache back to."""
        hf.check_cache_layers(cache, recurrent_allowed=not self.can_cut)
        return hf.snapshot(cache)

    def restore(self, cache, snapshot) -> None:
        """Write the snapshot back into ``cache`` (the same object; the snapshot stays usable)."""
        hf.restore(cache, snapshot)

    def drop(self, cache, start: int, stop: int) -> None:
        """Remove cached tokens ``start:stop`` (the oldest long-term frames under a cap)."""
        if stop <= start:
            return
        if not self.can_cut:
            raise UnsupportedModelError(
                f"{self.adapter.family}'s linear-attention layers keep a recurrent state that cannot forget tokens; "
                "the session prefills its cache again instead of cutting it (can_cut is False)."
            )
        hf.check_cache_layers(cache, recurrent_allowed=False)
        hf.drop(cache, start, stop)


class Qwen2_5_VLStreamOps(StreamOps):
    """Qwen2.5-VL: every piece is the base implementation (visual tokens only, M-RoPE, DynamicCache)."""


class Qwen2VLStreamOps(StreamOps):
    """Qwen2-VL: temporal position = video start + grid step index (the adapter's interval)."""


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


@dataclass
class KeptRows:
    """Per deepstack level, the rows of a final frame's kept cells only (merges applied)."""

    levels: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(level.numel() * level.element_size() for level in self.levels)


def _single_frame(record, grid_hw: tuple[int, int], cells: torch.Tensor):
    """What :func:`~fluxmem.memory.merge_kept` reads of a compress result, for one frame whose kept
    cells are ``cells`` (ascending)."""
    keep = torch.zeros(grid_hw[0] * grid_hw[1], dtype=torch.bool)
    keep[cells.cpu()] = True
    return SimpleNamespace(grid_thw=(1, grid_hw[0], grid_hw[1]), frames=[record], keep=keep)


class Qwen3VLStreamOps(StreamOps):
    """Qwen3-VL and Qwen3-VL-MoE: per-step timestamp blocks and deepstack features."""


    def __init__(self, adapter, processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        super().__init__(adapter, processor, min_pixels=min_pixels, max_pixels=max_pixels)
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
        self._vision_start = int(getattr(self.model.config, "vision_start_token_id", None)
                                 or tokenizer.convert_tokens_to_ids("<|vision_start|>"))  # fmt: skip
        self._vision_end = int(getattr(self.model.config, "vision_end_token_id", None)
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

    # ------------------------------------------------------------ positions
    def timestamp_text(self, step: int, fps: float) -> str:
        """The processor's timestamp of grid step ``step`` for frames sampled at ``fps`` (frame
        ``i`` at ``i / fps`` s; a step's time is the mean of its first and last frame)."""
        return f"<{hf.step_seconds(step, fps, self.temporal_patch_size):.1f} seconds>"

    def layout(self, head_length: int, grid_hw: tuple[int, int], fps: float, positions: str = "original",
               frame_size: tuple[int, int] | None = None) -> VideoLayout:  # fmt: skip
        """A :class:`BlockLayout`, checked on a 3-step probe (frames of ``frame_size``, default the
        grid's own size) against the processor's own video text and the model's ``get_rope_index``
        (the family's original rule: ``positions`` changes nothing)."""
        layout = BlockLayout(head_length, grid_hw, lambda step: self.encode_text(self.timestamp_text(step, fps)))
        self._check_layout(layout, fps, steps=3, frame_size=frame_size)
        return layout

    def text_rows(self, layout: VideoLayout, step: int) -> int:
        """The step's timestamp tokens, ``<|vision_start|>`` and ``<|vision_end|>``."""
        return len(layout.text_ids(step)) + 2

    def _check_layout(self, layout: BlockLayout, fps: float, steps: int, frame_size: tuple[int, int] | None = None) -> None:
        height, width = grid_hw = layout.grid_hw
        if frame_size is None:  # frames already of the grid's size (a resize is not idempotent under every budget)
            factor = self.spatial_merge_size * int(self.model.config.vision_config.patch_size)
            frame_size = (height * factor, width * factor)
        frames = torch.zeros(1, 3, *frame_size, dtype=torch.uint8).expand(steps * self.temporal_patch_size, -1, -1, -1)
        placeholder = getattr(self.processor, "video_token", None) or "<|video_pad|>"
        probe = self.offline_inputs(placeholder, frames, fps)
        mine = []
        for step in range(steps):
            mine += layout.text_ids(step) + [self._vision_start] + [self.adapter.video_token_id] * (height * width)
            mine.append(self._vision_end)
        problem = None
        expected_grid = [steps, height * self.spatial_merge_size, width * self.spatial_merge_size]
        if probe["video_grid_thw"].tolist() != [expected_grid]:
            problem = (f"the processor resizes a {steps}-step video of {frame_size[0]}x{frame_size[1]} frames to the "
                       f"patch grid {probe['video_grid_thw'][0].tolist()}, one grid step to {expected_grid[1:]}")  # fmt: skip
        elif probe["input_ids"][0].tolist() != mine:
            problem = "the processor writes the per-frame timestamp blocks differently than the session does"
        else:
            text_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([[text_id] * layout.start + mine + [text_id] * 3])
            expected, _ = hf.rope_index(self.model, ids, video_grid_thw=probe["video_grid_thw"])
            cells = torch.arange(height * width)
            parts = [self.text_positions(0, layout.start)]
            parts += [self._block_positions(layout, step, cells) for step in range(steps)]
            parts.append(self.text_positions(layout.tail_start(steps), 3))
            if not torch.equal(torch.cat(parts, dim=1), expected[:, 0]):
                problem = "the model numbers the per-frame blocks' positions differently than the session does"
        if problem is not None:
            raise hf.unsupported([
                (f"{self.adapter.family}: {problem} (merged grid {grid_hw}; the offline path, "
                "model.generate with use_fluxmem=True, still works)")
            ], "the streaming session")  # fmt: skip

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
        return Block(embeds, positions, visual, self.final_extras(layout.grid_hw, cells, record, extras).levels)

    def final_extras(self, grid_hw: tuple[int, int], cells: torch.Tensor, record, extras):
        """The step's deepstack rows of its kept ``cells`` with its long-term merges applied: what a
        FINAL frame needs from now on (the session keeps these instead of every cell's rows)."""
        if extras is None or isinstance(extras, KeptRows):
            return extras
        if record is None or record.merged_into is None:  # no merges: the kept cells' rows as they are
            index = cells.to(extras[0].device)
            return KeptRows([level.index_select(0, index) for level in extras])
        frame = _single_frame(record, grid_hw, cells)
        return KeptRows([merge_kept(frame, level) for level in extras])


class Qwen3_5StreamOps(Qwen3VLStreamOps):
    """Qwen3.5 and Qwen3.5-MoE: Qwen3-VL's blocks (no deepstack) and a hybrid cache whose
    linear-attention layers hold a recurrent state: snapshot and restore it, never cut it
    (:attr:`StreamOps.can_cut` is False from the config's ``layer_types``)."""
