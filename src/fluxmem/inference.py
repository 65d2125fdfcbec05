"""One question about one video: sampling options, processor inputs, encoding, generation.

Shared by ``fluxmem ask``, the offline evaluation path and the pictures, so that all of them
sample, encode and prune the same way.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from .adapters import get_state, registry
from .errors import ConfigError, InputError
from .inputs import chat_messages, processor_inputs, token_pixels
from .video import check_pixel_budget
from .video.pixels import uint8_pixels


@dataclass(frozen=True)
class SamplingOptions:
    """How frames are taken from a video (qwen-vl-utils' keys, plus end-anchored sampling)."""

    fps: float = 1.0
    max_frames: int | None = None
    min_frames: int | None = None
    max_pixels: int | None = None
    min_pixels: int | None = None
    total_pixels: int | None = None
    video_start: float | None = None
    video_end: float | None = None
    anchor_end: bool = False

    def __post_init__(self) -> None:
        if not _is_number(self.fps) or self.fps <= 0:
            raise ConfigError(f"fps must be a positive number of frames per second, got {self.fps!r}.")
        for name in ("max_frames", "min_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of frames >= 1 (or None), got {value!r}.")
        check_pixel_budget(self.min_pixels, self.max_pixels)
        if self.total_pixels is not None and (not _is_number(self.total_pixels) or self.total_pixels < 1):
            raise ConfigError(f"total_pixels must be a number of pixels >= 1 (or None), got {self.total_pixels!r}.")
        for name in ("video_start", "video_end"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 0):
                raise ConfigError(f"{name} must be a number of seconds >= 0 (or None), got {value!r}.")
        if not isinstance(self.anchor_end, bool):
            raise ConfigError(f"anchor_end must be True or False, got {self.anchor_end!r}.")
        if self.video_start is not None and self.video_end is not None and self.video_end <= self.video_start:
            raise ConfigError(f"video_end ({self.video_end}) must come after video_start ({self.video_start}).")

    def video_item(self, video) -> dict:
        """The message content item that ``process_vision_info`` reads: a path, or frames
        (a list of images, or an array ``[T, H, W, 3]`` uint8)."""
        item = {"type": "video", "video": _as_video_source(video)}
        item.update({k: v for k, v in asdict(self).items() if v is not None and v is not False})
        return item

    def to_dict(self) -> dict:
        return asdict(self)


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _as_video_source(video):
    if isinstance(video, (str, os.PathLike)):
        return str(video)
    if isinstance(video, torch.Tensor):
        video = video.cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"video frames must be an array [T, H, W, 3], got shape {video.shape}.")
        video = uint8_pixels(video, "the video")  # uint8 0..255 or floats 0..1 (fluxmem.video.pixels)
        return [Image.fromarray(np.ascontiguousarray(frame)) for frame in video]
    if isinstance(video, (list, tuple)):
        return list(video)
    raise InputError(f"a video must be a path or frames, got {type(video).__name__}.")


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    memory: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    prompt_tokens: int = 0


def build_messages(video, question: str, sampling: SamplingOptions, system: str | None = None) -> list[dict]:
    """Chat messages asking ``question`` about ``video`` sampled with ``sampling``."""
    return chat_messages(question, [sampling.video_item(video)], system=system)


def build_inputs(processor, messages: list[dict], *, progress: bool = False, second_per_grid_ts=None):
    """Processor inputs for chat ``messages`` (see :func:`fluxmem.inputs.processor_inputs`), with a
    progress bar over the decoded frames when ``progress``."""
    return processor_inputs(processor, messages, progress=progress, second_per_grid_ts=second_per_grid_ts)


def encode_videos(model, inputs, *, progress: bool = False, chunk_steps: int = 8) -> dict | None:
    """Encode the videos of ``inputs`` once, a few temporal grid steps at a time where the family's
    vision tower allows it (exact), with a progress bar.

    Returns ``mm_encoder_outputs`` for ``generate`` (which then skips its own encoding); it carries
    every output the stock encoder gives (e.g. Qwen3-VL's deepstack features).
    """
    from tqdm.auto import tqdm

    pixels, grids = inputs.get("pixel_values_videos"), inputs.get("video_grid_thw")
    if pixels is None:
        return None
    adapter = registry.adapter_for(model)
    with torch.inference_mode(), tqdm(
        total=int(grids[:, 0].sum()), desc="encoding", unit="step", disable=not progress
    ) as bar:
        video = adapter.encode_videos_stepwise(
            pixels.to(model.device), grids.to(model.device), chunk_steps=chunk_steps, on_steps=bar.update
        )
    return {"video": video}


@dataclass
class PreparedQuestion:
    """A question about a video, decoded and encoded once: the processor's inputs, the vision
    tower's outputs (``mm_encoder_outputs``), and what decoding and encoding cost. Every memory
    method answers from the same one (:func:`generate_answer`): methods differ only after the
    vision tower."""

    inputs: dict
    encoded: dict | None
    timings_ms: dict = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def prepare_question(
    model,
    processor,
    video,
    question: str,
    *,
    sampling: SamplingOptions | None = None,
    progress: bool = False,
    system: str | None = None,
    second_per_grid_ts: list[float] | None = None,
) -> PreparedQuestion:
    """Decode ``video`` and encode its frames for ``question`` (the part of :func:`answer` that
    does not depend on the memory method)."""
    sampling = sampling or SamplingOptions()
    if not isinstance(sampling, SamplingOptions):
        raise ConfigError(f"sampling must be a SamplingOptions(...), got {type(sampling).__name__} {sampling!r}.")
    check_pixel_budget(sampling.min_pixels, sampling.max_pixels, token_pixels(processor))
    timings = {}
    started = time.perf_counter()
    messages = build_messages(video, question, sampling, system)
    inputs = build_inputs(processor, messages, progress=progress, second_per_grid_ts=second_per_grid_ts)
    timings["decode_ms"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    encoded = encode_videos(model, inputs, progress=progress)
    timings["encode_ms"] = (time.perf_counter() - started) * 1000
    return PreparedQuestion(inputs=inputs, encoded=encoded, timings_ms=timings)


def generate_answer(
    model,
    processor,
    prepared: PreparedQuestion,
    *,
    max_new_tokens: int = 128,
    use_fluxmem: bool | None = None,
    memory=None,
    budget=None,
    **generate_kwargs,
) -> Answer:
    """Answer a :func:`prepare_question` with the model's memory, or with ``memory`` (a method
    of :mod:`fluxmem.memories` or its spec) at ``budget``; ``prepared`` is not modified, so one
    prepared question serves every method. ``timings_ms`` holds the prepared question's decoding
    and encoding times and this call's generation time."""
    if memory is not None or budget is not None:
        if get_state(model) is None:  # the switch, off by default, for this call's method
            from .adapters import install

            install(model, default_active=False)
        use_fluxmem = True if use_fluxmem is None else use_fluxmem
    inputs, encoded = prepared.inputs, prepared.encoded
    model_inputs = {k: v for k, v in inputs.items() if not (encoded and k == "pixel_values_videos")}
    model_inputs = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in model_inputs.items()}
    if encoded is not None:
        model_inputs["mm_encoder_outputs"] = encoded
    if use_fluxmem is not None:
        model_inputs["use_fluxmem"] = use_fluxmem
    if memory is not None:
        model_inputs["memory"] = memory
    if budget is not None:
        model_inputs["budget"] = budget
    generate_kwargs.setdefault("do_sample", False)
    timings = dict(prepared.timings_ms)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**model_inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    timings["generate_ms"] = (time.perf_counter() - started) * 1000
    prompt_length = prepared.prompt_tokens
    new_tokens = output[0, prompt_length:].tolist()
    text = processor.batch_decode([new_tokens], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
    state = get_state(model)
    summary = state.summary() if state is not None else {}
    return Answer(text=text, token_ids=new_tokens, memory=summary, timings_ms=timings, prompt_tokens=prompt_length)


def answer(
    model,
    processor,
    video,
    question: str,
    *,
    sampling: SamplingOptions | None = None,
    max_new_tokens: int = 128,
    use_fluxmem: bool | None = None,
    progress: bool = False,
    system: str | None = None,
    second_per_grid_ts: list[float] | None = None,
    memory=None,
    budget=None,
    **generate_kwargs,
) -> Answer:
    """Ask ``question`` about ``video`` (a path or a list of frames) with greedy decoding by default.
    ``second_per_grid_ts`` replaces the true temporal spacing (a protocol that prescribes another);
    ``memory`` / ``budget``: the memory method and token budget of this call (``fluxmem.memories``;
    the switch is installed, off by default, when the model has none; :func:`generate_answer`)."""
    prepared = prepare_question(model, processor, video, question, sampling=sampling, progress=progress,
                                system=system, second_per_grid_ts=second_per_grid_ts)
    return generate_answer(model, processor, prepared, max_new_tokens=max_new_tokens, use_fluxmem=use_fluxmem,
                           memory=memory, budget=budget, **generate_kwargs)
