"""Which frames of a video the model sees: pure index arithmetic, no decoding.

Two samplers:

* `offline_frame_indices` - whole-video (or `video_start`..`video_end`) sampling with the usual
  Qwen rules: `fps` (default 2) or `nframes`, clamped to `[min_frames, max_frames]`, an even count,
  spread evenly (linspace) over the range.
* `realtime_frame_indices` - end-anchored sampling for a question asked at time `t`: frames at
  exactly `1/fps` spacing ENDING at `t`, inside a history window, newest frames kept when capped.

Frame `i` of a video is taken to be shown at `i / native_fps` seconds (constant frame rate).
`sampled_fps` turns chosen indices into the true sampling rate that the model must be told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError

FRAME_FACTOR = 2  # Qwen2.5-VL merges 2 raw frames into one temporal grid step
DEFAULT_FPS = 2.0  # qwen-vl-utils default sampling rate
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768

# Tolerance for times that are a hair off a frame boundary (e.g. 2.3 s * 10 fps = 22.999...).
_EPS = 1e-6


def _check_positive(name: str, value, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")


def check_pixel_budget(min_pixels, max_pixels, token_pixels: int | None = None, *,
                       flags: tuple[str, str] = ("min_pixels", "max_pixels")) -> None:
    """A per-frame pixel budget that can be met: whole numbers >= 1, ``min <= max``, and ``max`` at
    least one visual token (``token_pixels`` = (patch size * merge size)², when the model is known).
    ``flags`` name the two settings in the message (``--min-pixels`` on the command line)."""
    for flag, value in zip(flags, (min_pixels, max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{flag} must be a whole number of pixels >= 1 (or None), e.g. 401408 = 512*28*28, got {value!r}.")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ConfigError(f"{flags[0]} ({min_pixels}) must not exceed {flags[1]} ({max_pixels}); lower the one or raise the other.")
    if token_pixels and max_pixels is not None and max_pixels < token_pixels:
        side = math.isqrt(token_pixels)
        raise ConfigError(
            f"{flags[1]} {max_pixels} is less than one visual token ({side}*{side} = {token_pixels} pixels for this model); "
            f"use {flags[1]} >= {token_pixels}, e.g. {512 * token_pixels} = 512*{side}*{side}."
        )


def _check_time(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a time in seconds >= 0, got {value!r}.")


def _check_count(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")


def frame_at(time_s: float, native_fps: float) -> int:
    """Index of the last frame shown at or before `time_s`."""
    return math.floor(time_s * native_fps + _EPS)


def first_frame_from(time_s: float, native_fps: float) -> int:
    """Index of the first frame shown at or after `time_s`."""
    return max(0, math.ceil(time_s * native_fps - _EPS))


def realtime_frame_indices(
    native_fps: float,
    end_time: float,
    fps: float,
    window: float | None = None,
    max_frames: int | None = None,
    start_time: float = 0.0,
    total_frames: int | None = None,
) -> list[int]:
    """End-anchored ("real-time") sampling: what a viewer at `end_time` has seen, at `fps`.

    The anchor is the last frame shown at or before `end_time` (clamped to the last frame of the
    video when `total_frames` is given). Going back from it, frame `anchor - round(k * native_fps
    / fps)` is taken for k = 0, 1, 2, ... while it lies inside the window, i.e. at or after
    `max(start_time, anchor_time - window)` where `anchor_time = anchor / native_fps`; at most
    `max_frames` frames are taken, so a cap keeps the NEWEST frames. Duplicates (when `fps` exceeds
    the native rate) are dropped. Returned in increasing order; empty when the window holds no
    frame (e.g. `start_time` after the end of the video).

    Unlike spreading `max_frames` evenly over the window, the spacing is exactly `1/fps` whatever
    the window length, so the temporal positions the model sees mean the same thing for every
    question. Report `sampled_fps(indices, native_fps)` to the model.

    Example: native 25 fps, end 10 s, fps 1, window 4 s -> [150, 175, 200, 225, 250]; the same on a
    250-frame video (last frame 249) -> [149, 174, 199, 224, 249].
    """
    _check_positive("native_fps", native_fps, allow_none=False)
    _check_positive("fps", fps, allow_none=False)
    _check_time("end_time", end_time)
    _check_time("start_time", start_time)
    _check_time("window", window)
    _check_count("max_frames", max_frames)
    _check_count("total_frames", total_frames)
    if end_time < start_time:
        raise ConfigError(f"end_time ({end_time} s) must not be before start_time ({start_time} s).")

    anchor = frame_at(end_time, native_fps)
    if total_frames is not None:
        anchor = min(anchor, total_frames - 1)
    window_start = start_time
    if window is not None:
        window_start = max(start_time, anchor / native_fps - window)
    first = first_frame_from(window_start, native_fps)

    step = native_fps / fps
    picked: list[int] = []
    k = 0
    while max_frames is None or len(picked) < max_frames:
        idx = anchor - round(k * step)
        if idx < first:
            break
        if not picked or idx != picked[-1]:
            picked.append(idx)
        k += 1
    picked.reverse()
    return picked


def offline_frame_indices(
    total_frames: int,
    native_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int | None = None,
    max_frames: int | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
) -> list[int]:
    """Whole-video sampling with the Qwen rules (qwen-vl-utils `smart_nframes` + linspace).

    The range is frames `ceil(start_time * native_fps)` .. `floor(end_time * native_fps)` (the
    whole video by default). Its frame count n is then either `nframes` (rounded to an even
    number) or `n_range / native_fps * fps` (default fps 2) clamped to `[min_frames, max_frames]`
    (defaults 4 and 768) and to the range, floored to an even number. The n frames are spread
    evenly, first and last frame of the range included. A range of a single frame gives that one
    frame (pad it to an even count before handing it to the model).
    """
    _check_count("total_frames", total_frames)
    _check_positive("native_fps", native_fps, allow_none=False)
    _check_positive("fps", fps)
    _check_count("nframes", nframes)
    _check_count("min_frames", min_frames)
    _check_count("max_frames", max_frames)
    _check_time("video_start", start_time)
    _check_time("video_end", end_time)
    if fps is not None and nframes is not None:
        raise ConfigError("Give either fps or nframes for a video, not both.")
    if min_frames is not None and max_frames is not None and min_frames > max_frames:
        raise ConfigError(f"min_frames ({min_frames}) must not exceed max_frames ({max_frames}).")
    if start_time is not None and end_time is not None and end_time < start_time:
        raise ConfigError(f"video_end ({end_time} s) must not be before video_start ({start_time} s).")

    first = first_frame_from(start_time, native_fps) if start_time is not None else 0
    last = total_frames - 1
    if end_time is not None:
        last = min(last, frame_at(end_time, native_fps))
    if first > last:
        raise ConfigError(
            f"The time range {start_time or 0} s .. {end_time if end_time is not None else 'end'} holds no frame "
            f"of a {total_frames}-frame video at {native_fps:g} fps."
        )
    count = last - first + 1
    if count < FRAME_FACTOR:
        return list(range(first, last + 1))

    ele: dict = {}
    if nframes is not None:
        if nframes > count:
            raise ConfigError(f"nframes={nframes} exceeds the {count} frames in the selected range; lower it.")
        nframes = max(nframes, FRAME_FACTOR)
        if round(nframes / FRAME_FACTOR) * FRAME_FACTOR > count:  # Qwen rounds to even: stay in range
            nframes = count // FRAME_FACTOR * FRAME_FACTOR
        ele["nframes"] = nframes
    else:
        ele["fps"] = DEFAULT_FPS if fps is None else fps
        if min_frames is not None:
            ele["min_frames"] = min_frames
        if max_frames is not None:
            ele["max_frames"] = max(max_frames, FRAME_FACTOR)
    n = _qwen().smart_nframes(ele, total_frames=count, video_fps=native_fps)
    return torch.linspace(first, last, n).round().long().tolist()


def sampled_fps(indices: Sequence[int], native_fps: float, nominal_fps: float | None = None) -> float:
    """The true sampling rate of distinct, increasing frame indices: mean spacing over the span.

    With one frame there is no spacing; `nominal_fps` (capped at the native rate) or the native
    rate is returned.
    """
    _check_positive("native_fps", native_fps, allow_none=False)
    if len(indices) >= 2 and indices[-1] > indices[0]:
        return (len(indices) - 1) * native_fps / (indices[-1] - indices[0])
    if nominal_fps is not None:
        return min(float(nominal_fps), float(native_fps))
    return float(native_fps)


def pad_to_multiple(count: int, factor: int = FRAME_FACTOR) -> int:
    """How many copies of the last frame make `count` frames a multiple of `factor`."""
    return -count % factor


def _qwen():
    """qwen-vl-utils' vision_process module (pure helpers: smart_resize, smart_nframes, constants)."""
    try:
        from qwen_vl_utils import vision_process
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "fluxmem.video needs qwen-vl-utils for Qwen frame/pixel rules: pip install 'qwen-vl-utils>=0.0.14'."
        ) from exc
    return vision_process
