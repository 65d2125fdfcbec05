"""``StreamSession``: ingest frames once, answer at any moment, exactly as the offline model.

See ``docs/streaming.md`` for the user-facing description and ``/shared/spec/streaming.md`` for
why each piece is exact. In short: each grid step is encoded once as its frames arrive; the memory
(:class:`fluxmem.memory.FluxMemory`, the class ``compress`` runs) is updated incrementally; the
keys/values of the prompt head and of every long-term (final) frame are computed once; a question
prefills only the mid-term and short-term tokens and the question on top, then the cache is cut
back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..adapters import hf
from ..adapters.streaming import Block, BlockLayout, StreamOps, VideoLayout
from ..errors import ConfigError, FluxMemError, InputError
from ..inputs import chat_messages, check_question, render, token_pixels
from ..memories import FluxMem, Memory, MemoryStats
from ..memories import get as get_memory
from ..memory import FluxMemConfig, check_config
from ..video import check_pixel_budget
from ..video.pixels import uint8_pixels


def stream_ops_for(model, processor, **options) -> StreamOps:
    """The streaming strategy of ``model``'s family (one registry: ``adapters/registry.py``)."""
    from ..adapters import registry, unwrap

    return registry.adapter_for(unwrap(model)).stream_ops(processor, **options)


_GENERATE_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "eos_token_id")
_TIERS = ("short", "mid", "long")
_SLOT_TOLERANCE = 1e-3  # of the sampling interval: clock rounding, far below any real frame spacing
CAP_POLICIES = ("cut", "prefill")
"""What the cap does to the key/value cache when it evicts frames: ``"cut"`` removes their rows in
place (the survivors keep the keys/values computed while the evicted frames were present);
``"prefill"`` computes the remaining prefix again, so that an answer equals a full prefill of the
kept tokens (what a server that cannot evict in place does)."""


@dataclass
class StreamAnswer:
    """One answer of :meth:`StreamSession.ask`."""

    question: str
    text: str
    token_ids: list[int]
    time: float | None
    """Stream time (timestamp of the last pushed frame) when the question was answered."""
    latency_ms: float
    memory: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    prompt_tokens: int = 0
    """Tokens the language model attended to for the first answer token (cached + prefilled)."""
    prefilled_tokens: int = 0
    """Tokens prefilled for this question (the rest came from the reused cache)."""

    def to_dict(self) -> dict:
        return {
            "time": self.time,
            "question": self.question,
            "answer": self.text,
            "latency_ms": round(self.latency_ms, 3),
            "memory": self.memory,
        }


@dataclass
class StreamEvent:
    """Something :meth:`StreamSession.push` reports: a scene change (proactive mode)."""

    kind: str
    time: float
    frame_index: int
    """Temporal grid step that triggered it."""
    change_fraction: float
    answer: StreamAnswer | None = None
    """The standing instruction's answer, when one is set."""

    def to_dict(self) -> dict:
        out = {
            "event": self.kind,
            "time": self.time,
            "frame_index": self.frame_index,
            "change_fraction": round(self.change_fraction, 6),
        }
        if self.answer is not None:
            out.update(question=self.answer.question, answer=self.answer.text,
                       latency_ms=round(self.answer.latency_ms, 3), memory=self.answer.memory)
        return out


class StreamSession:
    """A live video conversation with a Qwen-VL model and the FluxMem memory.

    ``push(frame, timestamp)`` samples frames to ``fps``, encodes every complete temporal grid step
    once and updates the memory; ``ask(question)`` answers from everything seen so far and, under
    greedy decoding, returns the same tokens as ``model.generate(**session.offline_inputs(question),
    **session.offline_generate_options())`` on the frames pushed so far.

    Memory options: ``memory`` names a causal memory method (``"recent:4"``, ``"uniform:4"``,
    ``"none"``, FluxMem's ablations; default: the method of the switch on ``model`` if it has one,
    else FluxMem); a method that needs the whole video (EVS, VidCom², random) is refused. ``config``
    or the :class:`FluxMemConfig` fields as keywords set FluxMem's parameters (default: the
    switch's settings, else the paper's defaults).
    ``max_memory_tokens`` caps the video's tokens held: kept visual tokens plus, on Qwen3-VL and
    Qwen3.5, each grid step's timestamp and vision start/end tokens (the oldest long-term frames are
    dropped from the memory and the key/value cache, in batches down to :attr:`cap_low_water`).
    ``cap_policy`` (``"cut"`` or ``"prefill"``, :data:`CAP_POLICIES`) says whether evicted frames
    are cut out of the cache in place or the remaining prefix is prefilled again (recurrent families
    always prefill again).
    ``encode_only=True`` runs only the vision tower and the memory (``ask`` is refused): a server
    reads the kept tokens with :meth:`kept_video` and answers with its own engine.
    ``reuse_cache=False`` prefills everything at each question. With cache reuse, a final frame is
    held once, in the cache (its features and deepstack rows are released) unless ``keep_frames``
    or a recurrent cache under a cap needs them again (:attr:`holds_final`).
    ``history=True`` keeps earlier questions and answers in the prompt. ``proactive=True`` emits a
    scene-change event when a grid step's change fraction exceeds ``gamma``, answering
    ``instruction`` when given. ``keep_frames=True`` keeps the sampled frames so that
    :meth:`offline_inputs` can rebuild the offline inputs (memory grows with the stream).
    ``positions`` is the position rule (default: the switch's on ``model``, else ``"original"``;
    ``"transformers"`` numbers as the installed transformers' ``get_rope_index``).
    """

    def __init__(
        self,
        model,
        processor,
        config: FluxMemConfig | None = None,
        *,
        fps: float = 1.0,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        system: str | None = None,
        reuse_cache: bool = True,
        max_memory_tokens: int | None = None,
        history: bool = False,
        proactive: bool = False,
        gamma: float = 0.5,
        instruction: str | None = None,
        instruction_max_new_tokens: int = 64,
        keep_frames: bool = False,
        positions: str | None = None,
        memory: str | Memory | None = None,
        cap_policy: str = "cut",
        encode_only: bool = False,
        **memory_options,
    ) -> None:
        from ..adapters import get_state
        from ..adapters.base import check_positions

        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ConfigError(f"fps must be a positive number of frames per second, got {fps!r}.")
        if max_memory_tokens is not None and (isinstance(max_memory_tokens, bool) or not isinstance(max_memory_tokens, int) or max_memory_tokens < 1):
            raise ConfigError(f"max_memory_tokens must be a positive integer (or None for no cap), got {max_memory_tokens!r}.")
        if cap_policy not in CAP_POLICIES:
            raise ConfigError(f"cap_policy must be one of {', '.join(map(repr, CAP_POLICIES))}, got {cap_policy!r}.")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"gamma is a fraction of a frame's tokens and must lie in [0, 1], got {gamma!r}.")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError("the standing instruction is empty; pass the text to answer at each scene change, or None.")
        if instruction is not None and not proactive:
            raise ConfigError("a standing instruction is answered at scene changes; pass proactive=True with it.")
        unknown = set(memory_options) - set(FluxMemConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}; memory options are {sorted(FluxMemConfig.__dataclass_fields__)}.")
        state = get_state(model)
        base = check_config(config) or (state.config if state is not None else FluxMemConfig())
        self.config = base.replace(**memory_options) if memory_options else base
        self.positions = check_positions(positions or (state.positions if state is not None else "original"))
        if memory is None and state is not None and state.memory is not None:
            memory = state.memory
        method = FluxMem.from_config(self.config) if memory is None else get_memory(memory)
        if isinstance(method, FluxMem) and (config is not None or memory_options):
            method = method.replace(**self.config.to_dict())
        elif memory_options and not isinstance(method, FluxMem):
            raise ConfigError(f"{sorted(memory_options)} are FluxMem options; {method.spec} does not take them.")
        self.method: Memory = method
        if isinstance(method, FluxMem):
            self.config = method.config
        self.ops: StreamOps = stream_ops_for(model, processor, min_pixels=min_pixels, max_pixels=max_pixels)
        check_pixel_budget(min_pixels, max_pixels, token_pixels(processor))
        if encode_only:  # the language model may be absent (a meta-device shell): it never runs here
            reuse_cache = False
        else:
            hf.check_model(self.ops.model, "the streaming session")
        self.encode_only = bool(encode_only)
        method.check(temporal_patch_size=self.ops.temporal_patch_size)  # impossible settings fail now
        method.stream((1, 1), temporal_patch_size=self.ops.temporal_patch_size)  # whole-video methods refuse now
        if proactive and not method.tiered:
            raise ConfigError(f"proactive mode watches FluxMem's scene-change signal; {method.spec} has none (use memory='fluxmem').")
        self.model = self.ops.model
        self.processor = processor
        self.fps = float(fps)
        self.system = system
        self.reuse_cache = bool(reuse_cache)
        self.max_memory_tokens = max_memory_tokens
        self.history_enabled = bool(history)
        self.proactive = bool(proactive)
        self.gamma = float(gamma)
        self.instruction = instruction
        self.instruction_max_new_tokens = int(instruction_max_new_tokens)
        self.keep_frames = bool(keep_frames)
        self.cap_policy = cap_policy
        # A final frame's features and per-token extras are needed again only by a full prefill
        # (no cache, ask(reuse_cache=False) with keep_frames) or by a cache that must be prefilled
        # again after the cap drops frames (recurrent state); otherwise the cache holds the frame.
        self.holds_final = (not self.reuse_cache or self.keep_frames
                            or (max_memory_tokens is not None and not self.cuts_cache))  # fmt: skip
        self.reset()

    # ================================================================== state
    def reset(self) -> None:
        """Forget every frame, question and cached key/value; the settings stay."""
        self._last_timestamp: float | None = None
        self._first_sample_time: float | None = None
        self._next_sample_slot = 0
        self._frame_size: tuple[int, int] | None = None
        self._pending: list[torch.Tensor] = []
        self._pending_times: list[float] = []
        self._frames: list[torch.Tensor] = []  # sampled frames of complete steps (keep_frames only)
        self._frames_seen = 0
        self._frames_sampled = 0
        self._step_times: list[float] = []
        self._memory = None  # the method's streaming form (FluxMemory for FluxMem)
        self._layout: VideoLayout | None = None
        self._head: list[int] | None = None
        self._kept_counts: list[int] = []  # kept tokens per grid step (0 once evicted)
        self._step_extras: list = []  # per grid step, what ops.encode_step_parts kept (deepstack; None once evicted)
        self._entered_mid = 0  # frames < this have left short-term
        self._evicted = 0  # frames < this were dropped by the cap
        self._cache = None
        self._cached_frames = 0  # frames < this are in the cache (or evicted)
        self._cached_spans: list[tuple[int, int]] = []  # (frame, tokens) of cached frames, oldest first
        self._history: list[tuple[str, str]] = []
        self._timings = {k: 0.0 for k in ("preprocess", "encode", "memory", "cache", "prefill", "decode")}
        self._questions = 0
        self._peak_cache_tokens = 0
        self._cache_cuts = 0  # times the cap removed frames from the cache (cut, or dropped to prefill again)

    @property
    def time(self) -> float | None:
        """Timestamp of the last pushed frame (``None`` before the first)."""
        return self._last_timestamp

    @property
    def num_steps(self) -> int:
        """Temporal grid steps in the memory (encoded so far)."""
        return 0 if self._memory is None else self._memory.num_frames

    @property
    def memory(self):
        """The method's streaming form (a :class:`FluxMemory` for FluxMem), ``None`` before the first step."""
        return self._memory

    # ================================================================== push
    def push(self, frame, timestamp: float) -> list[StreamEvent]:
        """Add one RGB frame (HxWx3 numpy array or tensor, 3xHxW tensor, or PIL image; uint8 pixels
        0..255 or floats 0..1, see :mod:`fluxmem.video.pixels`) seen at ``timestamp`` seconds. Frames
        are sampled to the session's ``fps``; each complete grid step is encoded and pushed to the
        memory. Returns the events it raised (proactive mode). A frame the session cannot take is
        refused with an :class:`InputError` before anything changes (the session stays usable); the
        first frame's size is checked then against the processor and the model's positions."""
        timestamp = self._check_timestamp(timestamp)
        image = self._as_chw_uint8(frame)
        size = (int(image.shape[1]), int(image.shape[2]))
        if self._frame_size is not None and size != self._frame_size:
            raise InputError(
                f"frame size changed mid-stream from {self._frame_size[0]}x{self._frame_size[1]} to {size[0]}x{size[1]} "
                "(height x width); resize frames to the first frame's size before pushing, or reset() the session."
            )
        layout = self._layout_for_first_frame(image) if self._frame_size is None else None
        # --- every check passed: the state changes from here on
        if layout is not None:
            self._head, self._layout = layout
        self._frame_size = size
        self._last_timestamp = timestamp
        self._frames_seen += 1
        if not self._take_sample(timestamp):
            return []
        self._frames_sampled += 1
        self._pending.append(image)
        self._pending_times.append(timestamp)
        if len(self._pending) < self.ops.temporal_patch_size:
            return []
        frames = torch.stack(self._pending)
        step_time = self._pending_times[-1]
        self._pending, self._pending_times = [], []
        return self._ingest_step(frames, step_time)

    def _layout_for_first_frame(self, image: torch.Tensor) -> tuple[list[int], VideoLayout]:
        """``(head, layout)`` for a stream of frames of ``image``'s size: a grid step of copies of it
        through the processor (a size it refuses, such as an extreme aspect ratio, is an
        :class:`InputError` now, not at the next push) and the layout of its merged grid."""
        height, width = int(image.shape[1]), int(image.shape[2])
        probe = image.unsqueeze(0).expand(self.ops.temporal_patch_size, -1, -1, -1)
        try:
            _, grid_thw = self.ops.step_pixels(probe)
        except ValueError as error:  # the processor's own size rules (e.g. aspect ratio at most 200)
            if isinstance(error, FluxMemError):
                raise
            reason = " ".join(str(error).split()) or type(error).__name__
            raise InputError(
                f"a {height}x{width} frame (height x width) cannot be sized for the model ({reason}); crop or pad "
                "the frames to a less extreme shape. The frame was refused; the session is unchanged."
            ) from None
        head = self.ops.prompt_ids(self._render("?", [], with_video=True)).head
        return head, self.ops.layout(len(head), self.ops.merged_grid(grid_thw), self.fps, self.positions, frame_size=(height, width))

    def _check_timestamp(self, timestamp) -> float:
        if isinstance(timestamp, (torch.Tensor, np.ndarray)):
            if (timestamp.size if isinstance(timestamp, np.ndarray) else timestamp.numel()) != 1:
                raise InputError(
                    f"a frame's timestamp must be one number of seconds, got a {type(timestamp).__name__} of shape "
                    f"{tuple(timestamp.shape)}."
                )
            timestamp = timestamp.item()
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float, np.number)) or not math.isfinite(float(timestamp)):
            raise InputError(f"a frame's timestamp must be a finite number of seconds, got {timestamp!r}.")
        timestamp = float(timestamp)
        if self._last_timestamp is not None and timestamp <= self._last_timestamp:
            raise InputError(
                f"timestamps must strictly increase: got {timestamp:g} s after {self._last_timestamp:g} s; the frame "
                "was rejected and the session is unchanged."
            )
        return timestamp

    @staticmethod
    def _as_chw_uint8(frame) -> torch.Tensor:
        """``[3, H, W]`` uint8 CPU tensor from the accepted frame types."""
        try:
            from PIL import Image

            if isinstance(frame, Image.Image):
                frame = np.asarray(frame.convert("RGB"))
        except ImportError:  # pragma: no cover - PIL ships with transformers' vision extras
            pass
        if isinstance(frame, np.ndarray):
            frame = np.ascontiguousarray(uint8_pixels(frame))
            frame = torch.from_numpy(frame if frame.flags.writeable else frame.copy())
        if not isinstance(frame, torch.Tensor):
            raise InputError(f"a frame must be an RGB image (numpy array, tensor or PIL image), got {type(frame).__name__}.")
        frame = frame.detach().cpu()
        if frame.ndim == 3 and frame.shape[-1] == 3 and frame.shape[0] != 3:
            frame = frame.permute(2, 0, 1)
        elif frame.ndim == 3 and frame.shape[-1] == 3 and frame.shape[0] == 3 and frame.shape[1] != 3:
            frame = frame.permute(2, 0, 1)  # 3 x W x 3 is ambiguous; treat as H x W x 3 like a decoder would
        if frame.ndim != 3 or frame.shape[0] != 3 or min(frame.shape[1:]) < 1:
            raise InputError(f"a frame must be H x W x 3 (RGB), got shape {tuple(frame.shape)}.")
        return uint8_pixels(frame).contiguous()

    def _take_sample(self, timestamp: float) -> bool:
        """Whether the frame is sampled: the first frame at or after each slot ``k / fps`` seconds
        after the first frame. Times are counted from the first frame (an epoch-second clock has
        too few digits left for fractions of a frame) and a frame within a thousandth of the
        sampling interval before its slot counts as on it (a 30 fps clock writes 1/30 s inexactly)."""
        if self._first_sample_time is None:
            self._first_sample_time = timestamp
            self._next_sample_slot = 1
            return True
        elapsed_slots = (timestamp - self._first_sample_time) * self.fps
        if elapsed_slots < self._next_sample_slot - _SLOT_TOLERANCE:
            return False
        self._next_sample_slot = math.floor(elapsed_slots + _SLOT_TOLERANCE) + 1
        return True

    @torch.inference_mode()
    def _ingest_step(self, frames: torch.Tensor, step_time: float) -> list[StreamEvent]:
        started = time.perf_counter()
        pixels, grid_thw = self.ops.step_pixels(frames)
        encoded_at = time.perf_counter()
        features, extras = self.ops.encode_step_parts(pixels, grid_thw)
        memory_at = time.perf_counter()
        self._timings["preprocess"] += (encoded_at - started) * 1000
        self._timings["encode"] += (memory_at - encoded_at) * 1000
        if self._memory is None:
            grid_hw = self.ops.merged_grid(grid_thw)
            self._memory = self.method.stream(grid_hw, temporal_patch_size=self.ops.temporal_patch_size)
        update = self._memory.push(features)
        self._kept_counts.append(self._memory.cells)
        self._step_extras.append(extras)
        if update.entered_mid is not None:
            self._entered_mid = update.entered_mid + 1
            self._kept_counts[update.entered_mid] = int(self._memory.kept(update.entered_mid)[0].numel())
        if update.entered_long is not None:  # final from now on: keep only its kept cells' extras
            final = update.entered_long
            cells = self._memory.kept(final)[0]
            self._kept_counts[final] = int(cells.numel())
            self._step_extras[final] = self.ops.final_extras(
                self._memory.grid_hw, cells, self._memory.frames[final], self._step_extras[final]
            )
        self._step_times.append(step_time)
        if self.keep_frames:
            self._frames.extend(frames.unbind(0))
        cache_at = time.perf_counter()
        self._timings["memory"] += (cache_at - memory_at) * 1000
        if self.max_memory_tokens is not None:
            self._enforce_cap()
        if self.reuse_cache:
            self._extend_cache()
        self._timings["cache"] += (time.perf_counter() - cache_at) * 1000

        events = []
        change = update.change_fraction
        if self.proactive and change is not None and float(change) > self.gamma:
            event = StreamEvent("scene_change", step_time, update.frame_index, float(change))
            if self.instruction is not None:
                event.answer = self._answer(self.instruction, self.instruction_max_new_tokens, {}, None, record=False)
            events.append(event)
        return events

    # ================================================================== cap
    def _step_tokens(self, index: int) -> int:
        """Language-model rows grid step ``index`` holds: its kept visual tokens and the family's
        text around them (Qwen3-VL / Qwen3.5: timestamp, vision start and end)."""
        return self._kept_counts[index] + self.ops.text_rows(self._layout, index)

    def _memory_tokens(self) -> int:
        return sum(self._step_tokens(index) for index in range(self._evicted, self.num_steps))

    @property
    def cap_low_water(self) -> int | None:
        """Tokens the cap drops down to once exceeded: ``max_memory_tokens`` less an eighth, so that
        the cache is cut once per several frames, not at every grid step."""
        cap = self.max_memory_tokens
        return None if cap is None else cap - cap // 8

    def _enforce_cap(self) -> None:
        """When the video's tokens (every row of every grid step held: kept visual tokens and the
        family's text around them) exceed ``max_memory_tokens``, drop the oldest long-term frames
        until they fit :attr:`cap_low_water` (mid- and short-term frames are never dropped: they are
        not final); all of them leave the cache in one cut."""
        total = self._memory_tokens()
        if total <= self.max_memory_tokens:
            return
        dropped_cached = 0
        while total > self.cap_low_water and self._evicted < self._memory.num_final:
            index = self._evicted
            total -= self._step_tokens(index)
            if self._cached_spans and self._cached_spans[0][0] == index:
                dropped_cached += self._cached_spans.pop(0)[1]
            self._kept_counts[index] = 0
            self._step_extras[index] = None
            self._memory.forget(index)
            self._evicted += 1
        if dropped_cached and self.cuts_cache:
            start = len(self._head)
            self.ops.drop(self._cache, start, start + dropped_cached)
            self._cache_cuts += 1
        elif dropped_cached:  # cap_policy "prefill", or a recurrent state that cannot forget tokens
            self._cache, self._cached_spans = None, []
            self._cache_cuts += 1
        self._cached_frames = max(self._cached_frames, self._evicted)

    @property
    def cuts_cache(self) -> bool:
        """Whether the cap cuts evicted frames out of the key/value cache in place (``cap_policy="cut"``
        on a family whose cache can be cut); otherwise the cache is prefilled again from the head,
        so the survivors' keys/values no longer carry what they attended to in the evicted frames."""
        return self.cap_policy == "cut" and self.ops.can_cut

    # ================================================================== cache
    def _extend_cache(self) -> None:
        """Append the keys/values of the frames that became final (the head first)."""
        if self._cache is None:
            self._cache = self.ops.new_cache()
            self._cached_frames = self._evicted
            head = self._head
            self.ops.forward(self.ops.embed(head), self.ops.text_positions(0, len(head)), self._cache)
        final = self._memory.num_final
        start = max(self._cached_frames, self._evicted)
        if start >= final:
            return
        blocks, spans = [], []
        for index in range(start, final):
            block = self._segment(index)
            blocks.append(block)
            spans.append((index, block.embeds.shape[0]))
        joined = Block.join(blocks)
        if joined.embeds.shape[0]:  # final steps may keep nothing (recent:N drops whole steps)
            self.ops.forward_block(joined, self._cache)
        self._cached_spans.extend(spans)
        self._cached_frames = final
        if not self.holds_final:  # in the cache now: hold them once, there
            for index in range(start, final):
                self._memory.release(index)
                self._step_extras[index] = None
        self._peak_cache_tokens = max(self._peak_cache_tokens, self.ops.cache_length(self._cache))

    def _segment(self, index: int) -> Block:
        """The language-model rows of grid step ``index`` now (kept tokens, plus the family's text
        and deepstack features around them)."""
        cells, features = self._memory.kept(index)
        return self.ops.step_block(
            self._layout, index - self._restart_offset(), cells, features, record=self._memory.frames[index],
            extras=self._step_extras[index],
        )  # fmt: skip

    def _restart_offset(self) -> int:
        """Steps the kept video's numbering starts after: a method that feeds its kept steps as the
        video (``recent:N``) numbers them from the first position, as the offline switch does for a
        video in one block (not for Qwen3-VL's per-step blocks, whose timestamps stay)."""
        if not self.method.restarts_video or isinstance(self._layout, BlockLayout) or self._memory is None:
            return 0
        return self._memory.num_final

    # ================================================================== ask
    def ask(self, question: str, *, max_new_tokens: int = 128, reuse_cache: bool | None = None, **generate_options) -> StreamAnswer:
        """Answer ``question`` from everything seen so far (greedy by default).

        ``generate_options``: ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``.
        ``reuse_cache=False`` prefills everything for this question (the answer is the same); it
        needs the final frames' features, held only with ``keep_frames=True`` (else a ConfigError).
        Before the first grid step is complete the answer is text-only (the model sees no video).
        """
        check_question(question, "the stream")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        unknown = set(generate_options) - set(_GENERATE_OPTIONS)
        if unknown:
            raise ConfigError(f"unsupported generate option(s) {sorted(unknown)}; the session supports {list(_GENERATE_OPTIONS)}.")
        if self.encode_only:
            raise ConfigError("this session was created with encode_only=True; it holds the memory but does not answer.")
        if reuse_cache and not self.reuse_cache:
            raise ConfigError("this session was created with reuse_cache=False; there is no cache to reuse.")
        if reuse_cache is False and not self.holds_final and self.num_steps:
            raise ConfigError(
                "ask(reuse_cache=False) prefills every frame, but this session holds final frames only in its key/value "
                "cache (bounded memory); create it with keep_frames=True (or reuse_cache=False) to compare full prefills."
            )
        return self._answer(question, max_new_tokens, generate_options, reuse_cache, record=self.history_enabled)

    @torch.inference_mode()
    def _answer(self, question, max_new_tokens, options, reuse_cache, *, record) -> StreamAnswer:
        started = time.perf_counter()
        use_cache = self.reuse_cache if reuse_cache is None else bool(reuse_cache)
        cache, block, next_position = self._prefill_block(question, use_cache)
        snapshot = self.ops.snapshot(cache) if use_cache and self.num_steps else None
        reused = self.ops.cache_length(cache)
        prefill_at = time.perf_counter()
        try:
            logits = self.ops.forward_block(block, cache)
            decode_at = time.perf_counter()
            tokens = self._decode(logits, cache, next_position, max_new_tokens, options)
        finally:
            if snapshot is not None:
                self.ops.restore(cache, snapshot)
        done = time.perf_counter()
        prefill_ms, decode_ms = (decode_at - prefill_at) * 1000, (done - decode_at) * 1000
        self._timings["prefill"] += prefill_ms
        self._timings["decode"] += decode_ms
        self._questions += 1
        text = self.ops.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if record:
            self._history.append((question, text))
        return StreamAnswer(
            question=question,
            text=text,
            token_ids=tokens,
            time=self._last_timestamp,
            latency_ms=(done - started) * 1000,
            memory=self._memory_summary(),
            timings_ms={"prepare": round((prefill_at - started) * 1000, 3), "prefill": round(prefill_ms, 3), "decode": round(decode_ms, 3)},
            prompt_tokens=reused + block.embeds.shape[0],
            prefilled_tokens=block.embeds.shape[0],
        )

    def _prefill_block(self, question: str, use_cache: bool):
        """``(cache, block, next_position)`` for a question now (``block``: the rows to prefill, a
        :class:`Block`): with ``use_cache`` the session's cache and only the non-final frames + the
        tail; otherwise a new cache and the whole pruned prompt (what the offline switch prefills)."""
        history = self._history if self.history_enabled else []
        steps = self.num_steps
        if steps == 0:
            ids = self.ops.encode_text(self._render(question, history, with_video=False))
            return self.ops.new_cache(), Block(self.ops.embed(ids), self.ops.text_positions(0, len(ids))), len(ids)
        parts = self.ops.prompt_ids(self._render(question, history, with_video=True))
        if parts.head != self._head:
            raise InputError("the chat template put text that depends on the question before the video; the session needs a fixed prompt head.")
        layout = self._layout
        numbered = steps - self._restart_offset()
        tail_start = layout.tail_start(numbered)
        next_position = max(layout.max_position(numbered), tail_start + len(parts.tail) - 1) + 1
        if use_cache:
            if self._cache is None:
                self._extend_cache()
            cache, first = self._cache, max(self._memory.num_final, self._evicted)
            blocks = []
        else:
            cache, first = self.ops.new_cache(), self._evicted
            blocks = [Block(self.ops.embed(self._head), self.ops.text_positions(0, len(self._head)))]
        blocks += [self._segment(index) for index in range(first, steps)]
        blocks.append(Block(self.ops.embed(parts.tail), self.ops.text_positions(tail_start, len(parts.tail))))
        return cache, Block.join(blocks), next_position

    def _decode(self, logits, cache, next_position, max_new_tokens, options) -> list[int]:
        """Greedy (or sampled) decoding with the stock model, one token per step."""
        eos = options.get("eos_token_id", self.model.generation_config.eos_token_id)
        eos = set() if eos is None else ({int(eos)} if isinstance(eos, int) else {int(e) for e in eos})
        sample = bool(options.get("do_sample", False))
        tokens: list[int] = []
        for k in range(max_new_tokens):
            token = _sample(logits, options) if sample else int(torch.argmax(logits))
            tokens.append(token)
            if token in eos or k == max_new_tokens - 1:
                break
            logits = self.ops.forward(self.ops.embed([token]), self.ops.text_positions(next_position + k, 1), cache)
        return tokens

    # ================================================================== prompt
    def _messages(self, question: str, history: list[tuple[str, str]], *, with_video: bool) -> list[dict]:
        """The conversation as chat messages: the video at the head of the first user turn."""
        media = [{"type": "video", "video": "stream"}] if with_video else []
        return chat_messages(question, media, system=self.system, history=list(history))

    def _render(self, question: str, history: list[tuple[str, str]], *, with_video: bool) -> str:
        """The prompt text of the conversation (the processor's chat template)."""
        return render(self.processor, self._messages(question, history, with_video=with_video))

    def offline_inputs(self, question: str):
        """Processor inputs of the OFFLINE equivalent of ``ask(question)`` now: the same prompt
        (history included) with the video made of the frames sampled so far (complete grid steps),
        preprocessed by the processor as a whole. Needs ``keep_frames=True``. With a memory cap the
        offline inputs still hold the whole history (the cap is a streaming-only choice)."""
        check_question(question, "the stream")
        if not self.keep_frames:
            raise ConfigError("offline_inputs needs the sampled frames: create the session with keep_frames=True.")
        history = self._history if self.history_enabled else []
        with_video = self.num_steps > 0
        text = self._render(question, history, with_video=with_video)
        frames = torch.stack(self._frames) if with_video else None
        return self.ops.offline_inputs(text, frames, self.fps)

    def prompt_text(self, question: str) -> str:
        """The prompt text of ``question`` now (history included), the video as one placeholder."""
        history = self._history if self.history_enabled else []
        return self._render(question, history, with_video=self.num_steps > 0)

    def kept_video(self) -> dict | None:
        """The kept tokens now as ONE precomputed video (``None`` before the first grid step):
        ``video_embeds`` ``[K, D']`` in sequence order (deepstack levels concatenated on the last
        dimension), ``fluxmem_keep`` bool over the merged grid of every step so far (frames dropped
        by the cap keep nothing, so the survivors keep their positions), ``video_grid_thw``
        ``[1, 3]`` unmerged, and the grid steps' ``timestamps`` (seconds, as the processor computes
them from the sampling rate: the mean time of a step's frames); needs the final frames'
        features (``encode_only`` or ``reuse_cache=False`` sessions hold them)."""
        steps = self.num_steps
        if steps == 0:
            return None
        if not self.holds_final:
            raise ConfigError("kept_video needs the final frames' features; create the session with encode_only=True.")
        memory, merge = self._memory, int(self.model.config.vision_config.spatial_merge_size)
        keep = torch.zeros(steps, memory.cells, dtype=torch.bool)
        rows = []
        for index in range(self._evicted, steps):
            cells, features = memory.kept(index)
            keep[index, cells.cpu()] = True
            extras = self.ops.final_extras(memory.grid_hw, cells, memory.frames[index], self._step_extras[index])
            rows.append(torch.cat([features.cpu(), *(level.cpu() for level in (extras.levels if extras else []))], -1))
        height, width = memory.grid_hw
        grid = torch.tensor([[steps, height * merge, width * merge]])
        return {"video_embeds": torch.cat(rows), "video_grid_thw": grid, "fluxmem_keep": keep.reshape(-1),
                "timestamps": [hf.step_seconds(i, self.fps, self.ops.temporal_patch_size) for i in range(steps)]}  # fmt: skip

    def offline_generate_options(self) -> dict:
        """``generate`` options that make the offline switch use this session's memory settings."""
        if type(self.method) is FluxMem:
            return {"use_fluxmem": True, "positions": self.positions, **self.config.to_dict()}
        return {"use_fluxmem": True, "positions": self.positions, "memory": self.method.spec}

    # ================================================================== stats
    def memory_stats(self) -> MemoryStats:
        """The visual tokens held now (frames dropped by the cap not counted), per tier for FluxMem."""
        steps = self.num_steps
        cells = self._memory.cells if self._memory is not None else 0
        final = self._memory.num_final if self._memory is not None else 0
        tiers = None
        if self.method.tiered:
            ranges = {"long": (self._evicted, final), "mid": (final, self._entered_mid), "short": (self._entered_mid, steps)}
            tiers = {}
            for tier in _TIERS:
                lo, hi = ranges[tier]
                frames = max(0, hi - lo)
                tiers[tier] = {"frames": frames, "tokens": frames * cells, "kept": sum(self._kept_counts[lo:hi]) if frames else 0}
        return MemoryStats(
            tokens=(steps - self._evicted) * cells,
            kept=sum(self._kept_counts[self._evicted :]),
            videos=1 if steps else 0,
            method=self.method.spec,
            tiers=tiers,
            memory_ms=None,  # in stats()["timings_ms"]["memory"]: a stream's total, not one video's
            extra={"steps": steps, "evicted_frames": self._evicted},
        )

    def _memory_summary(self) -> dict:
        return self.memory_stats().to_dict()

    def resident_bytes(self) -> dict:
        """Bytes of the token-sized tensors the session holds: the memory's features, the key/value
        cache and the per-token extras (the per-frame decision records, a few bytes per cell, and
        the caller's model are not counted)."""
        held = {
            "memory": self._memory.feature_bytes() if self._memory is not None else 0,
            "cache": self.ops.cache_bytes(self._cache),
            "extras": self._extras_bytes(),
        }
        held["total"] = sum(held.values())
        return held

    def _extras_bytes(self) -> int:
        """Bytes of per-token extras held (deepstack rows: every cell of non-final frames, the kept
        cells of final frames, nothing for evicted ones)."""
        total = 0
        for extras in self._step_extras:
            levels = getattr(extras, "levels", extras) or []
            total += sum(level.numel() * level.element_size() for level in levels)
        return total

    def stats(self) -> dict:
        """Tokens per tier, retained fraction, cache size, frames seen and time spent per stage."""
        memory = self._memory_summary()
        return {
            "time": self._last_timestamp,
            "frames_seen": self._frames_seen,
            "frames_sampled": self._frames_sampled,
            "frames_pending": len(self._pending),
            "grid_steps": self.num_steps,
            "memory": memory,
            "cache": {
                "enabled": self.reuse_cache,
                "tokens": self.ops.cache_length(self._cache),
                "bytes": self.ops.cache_bytes(self._cache),
                "frames": len(self._cached_spans),
                "peak_tokens": self._peak_cache_tokens,
                "cuts": self._cache_cuts,
                "cap_policy": "cut" if self.cuts_cache else "prefill",
            },
            "extras_bytes": self._extras_bytes(),
            "resident_bytes": self.resident_bytes(),
            "questions": self._questions,
            "timings_ms": {k: round(v, 3) for k, v in self._timings.items()},
        }


def _sample(logits: torch.Tensor, options: dict) -> int:
    scores = logits.clone()
    temperature = options.get("temperature")
    if temperature is not None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0 when sampling, got {temperature}.")
        scores = scores / float(temperature)
    top_k = options.get("top_k")
    if top_k:
        kth = torch.topk(scores, min(int(top_k), scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    top_p = options.get("top_p")
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        remove = cumulative - ordered.softmax(-1) > float(top_p)
        scores[order[remove]] = float("-inf")
    return int(torch.multinomial(scores.softmax(-1), 1))
