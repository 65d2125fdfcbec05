"""`process_vision_info`: qwen-vl-utils' message format in, Qwen2.5-VL processor inputs out.

Drop-in for `qwen_vl_utils.process_vision_info`, with our own PyAV decoding (seek, decode only the
sampled frames) and one extra per-video option, `"anchor_end": True`, for real-time sampling
(see `sampling.realtime_frame_indices`). Pixel budgets and image loading are qwen-vl-utils' own
(`smart_resize`, `fetch_image`, its constants), imported rather than re-implemented.

The returned `video_kwargs` make the transformers 5.x processor use our frames as they are:
`do_sample_frames=False` (no re-sampling), `do_resize=False` (no re-sizing: the 5.x video
processor would otherwise enlarge frames below its own 128-token minimum), and per-video
`video_metadata` from which `Qwen2_5_VLProcessor` derives
`second_per_grid_ts = temporal_patch_size / sampled_fps` - the TRUE sampling rate of our frames.
They are passed as `videos_kwargs={...}` so that nothing leaks into image processing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvF

from ..errors import ConfigError, InputError, VideoError
from .decode import normalize_path, probe_video, read_indices
from .pixels import uint8_pixels
from .sampling import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    FRAME_FACTOR,
    _qwen,
    first_frame_from,
    offline_frame_indices,
    pad_to_multiple,
    realtime_frame_indices,
    sampled_fps,
)

logger = logging.getLogger(__name__)

_NUMBER_KEYS = ("fps", "sample_fps", "min_pixels", "max_pixels", "total_pixels", "resized_height", "resized_width")
_COUNT_KEYS = ("nframes", "min_frames", "max_frames")
_TIME_KEYS = ("video_start", "video_end", "window")


@dataclass
class VideoClip:
    """One video as the model will see it.

    `frames`: float32 [T, 3, H, W] RGB in 0..255 (what qwen-vl-utils returns), resized, T even.
    `indices` / `timestamps`: the source frame and its time for each row (padding repeats the
    last one; `num_padded` rows). `sample_fps`: the true sampling rate of the frames;
    `second_per_grid_ts = temporal_patch_size / sample_fps`.
    """

    frames: torch.Tensor
    indices: list[int]
    timestamps: list[float]
    sample_fps: float
    native_fps: float | None
    num_padded: int
    source: str | None = None

    def processor_metadata(self) -> dict:
        """`video_metadata` for the transformers processor: the clip as a T-frame video at
        `sample_fps`, so that its `sampled_fps` is exactly `sample_fps` and nothing is re-sampled."""
        count, _, height, width = self.frames.shape
        return {
            "total_num_frames": count,
            "fps": self.sample_fps,
            "frames_indices": list(range(count)),
            "duration": count / self.sample_fps,
            "width": width,
            "height": height,
            "video_backend": "pyav",
        }


def _check_item(ele: dict) -> None:
    """ConfigError for parameters that make no sense, before any file is touched."""
    for key in _NUMBER_KEYS:
        value = ele.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
        ):
            raise ConfigError(f"Video option {key!r} must be a positive number, got {value!r}.")
    for key in _COUNT_KEYS:
        value = ele.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"Video option {key!r} must be an integer >= 1, got {value!r}.")
    for key in _TIME_KEYS:
        value = ele.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
        ):
            raise ConfigError(f"Video option {key!r} must be a time in seconds >= 0, got {value!r}.")
    if ele.get("fps") is not None and ele.get("nframes") is not None:
        raise ConfigError("Give a video either 'fps' or 'nframes', not both.")
    if ele.get("anchor_end") and ele.get("nframes") is not None:
        raise ConfigError("'nframes' does not apply to anchor_end sampling; use 'fps' and 'max_frames'.")
    lo, hi = ele.get("min_pixels"), ele.get("max_pixels")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"min_pixels ({lo}) must not exceed max_pixels ({hi}).")
    lo, hi = ele.get("min_frames"), ele.get("max_frames")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"min_frames ({lo}) must not exceed max_frames ({hi}).")
    start, end = ele.get("video_start"), ele.get("video_end")
    if start is not None and end is not None and end < start:
        raise ConfigError(f"video_end ({end} s) must not be before video_start ({start} s).")


def _target_size(ele: dict, height: int, width: int, nframes: int, image_patch_size: int) -> tuple[int, int]:
    """qwen-vl-utils' per-frame pixel budget: [min_pixels, max_pixels], a total budget shared by
    all frames, sides multiples of patch*merge. A max_pixels below the default minimum lowers it."""
    qv = _qwen()
    factor = image_patch_size * qv.SPATIAL_MERGE_SIZE
    if ele.get("resized_height") is not None and ele.get("resized_width") is not None:
        return qv.smart_resize(int(ele["resized_height"]), int(ele["resized_width"]), factor=factor)
    default_min = qv.VIDEO_MIN_TOKEN_NUM * factor * factor
    min_pixels = ele.get("min_pixels", default_min)
    if "min_pixels" not in ele and ele.get("max_pixels") is not None:
        min_pixels = min(min_pixels, ele["max_pixels"])
    total_pixels = ele.get("total_pixels", qv.MODEL_SEQ_LEN * factor * factor * 0.9)
    max_pixels = max(
        min(qv.VIDEO_MAX_TOKEN_NUM * factor * factor, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05)
    )
    max_pixels = min(ele.get("max_pixels", max_pixels), max_pixels)
    try:
        size = qv.smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"Cannot size a {width}x{height} video: {exc}") from exc
    if min(size) < factor:  # the budget leaves no whole row or column of tokens at this aspect ratio
        needed = math.ceil(factor * factor * max(height, width) / min(height, width))
        raise ConfigError(
            f"a budget of {int(max_pixels)} pixels per frame is too small for a {width}x{height} video: it leaves no "
            f"row of {factor}x{factor}-pixel tokens; use max_pixels >= {needed} (and total_pixels >= that per frame)."
        )
    return size


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of uint8 frames, returned as float32 0..255 (as qwen-vl-utils)."""
    if tuple(frames.shape[-2:]) != tuple(size):
        frames = tvF.resize(frames, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    return frames.float()


def _frame_to_array(frame, position: int) -> np.ndarray:
    """One frame of a frame-list video as uint8 HxWx3 RGB."""
    if isinstance(frame, str) or hasattr(frame, "__fspath__"):
        path = normalize_path(frame)
        try:
            with Image.open(path) as img:
                frame = img.copy()
        except Exception as exc:
            raise VideoError(f"Cannot load frame {position} of a frame-list video ({path}): {exc}") from exc
    if isinstance(frame, Image.Image):
        return np.asarray(_qwen().to_rgb(frame))
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        if frame.ndim == 3 and frame.shape[0] == 3 and frame.shape[-1] != 3:
            frame = frame.permute(1, 2, 0)
        frame = frame.numpy()
    if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3:
        return uint8_pixels(frame, f"frame {position} of a frame-list video")  # uint8 0..255 or floats 0..1
    raise VideoError(
        f"Frame {position} of a frame-list video is a {type(frame).__name__}; give PIL images, image paths, "
        "or HxWx3 uint8 arrays."
    )


def _frames_from_list(video) -> torch.Tensor:
    """uint8 [T, 3, H, W] from a list of frames, or from a [T, H, W, 3] array / [T, 3, H, W] tensor."""
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim != 4:
            raise VideoError(f"A video array must have 4 dimensions [T, H, W, 3], got shape {tuple(video.shape)}.")
        video = list(video)
    if len(video) == 0:
        raise VideoError("The video's frame list is empty; give at least one frame.")
    arrays = [_frame_to_array(frame, i) for i, frame in enumerate(video)]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise VideoError(f"The frames of a frame-list video must all have the same size, got {sorted(sizes)}.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def fetch_video(ele: dict, image_patch_size: int = 14) -> VideoClip:
    """Sample, decode and resize one video content item (a path/URL, or a list of frames).

    Files are sampled offline with the Qwen rules, or end-anchored with `"anchor_end": True`
    (frames at exactly 1/fps ending at `video_end`, or at the end of the video; the window starts
    at `video_start` and/or `window` seconds before the end; at most `max_frames`, newest kept).
    Frame lists are taken whole at `sample_fps` (or `fps`, default 2). The frame count is padded
    to an even number by repeating the last frame.
    """
    ele = {key: value for key, value in ele.items() if value is not None}  # None means "default"
    _check_item(ele)
    if "video" not in ele:
        raise InputError(f"A video content item needs a 'video' key (a path, URL or list of frames): {ele}.")
    video = ele["video"]
    if isinstance(video, (list, tuple, np.ndarray, torch.Tensor)):
        if ele.get("anchor_end"):
            raise ConfigError("anchor_end sampling needs a video file; a frame list is used as given.")
        raw = _frames_from_list(video)
        fps = float(ele.get("sample_fps") or ele.get("fps") or DEFAULT_FPS)
        indices = list(range(len(raw)))
        native, source = None, None
    else:
        info = probe_video(video)
        source, native = info.path, info.fps
        start = ele.get("video_start")
        if start is not None and first_frame_from(start, native) >= info.num_frames:
            raise VideoError(
                f"video_start={start} s is beyond the end of {source} ({info.duration:.2f} s, "
                f"{info.num_frames} frames). Use a start time before the end."
            )
        if ele.get("anchor_end"):
            end = ele.get("video_end", info.duration)
            indices = realtime_frame_indices(
                native,
                end_time=end,
                fps=ele.get("fps", DEFAULT_FPS),
                window=ele.get("window"),
                max_frames=ele.get("max_frames", DEFAULT_MAX_FRAMES),
                start_time=start or 0.0,
                total_frames=info.num_frames,
            )
            if not indices:
                raise ConfigError(f"The window ending at {end} s of {source} holds no frame; widen it.")
        else:
            indices = offline_frame_indices(
                info.num_frames,
                native,
                fps=ele.get("fps"),
                nframes=ele.get("nframes"),
                min_frames=ele.get("min_frames"),
                max_frames=ele.get("max_frames"),
                start_time=start,
                end_time=ele.get("video_end"),
            )
        fps = sampled_fps(indices, native, nominal_fps=ele.get("fps", DEFAULT_FPS))
        raw = read_indices(source, info, indices)

    pad = pad_to_multiple(len(raw))
    if pad:
        raw = torch.cat([raw, raw[-1:].expand(pad, -1, -1, -1)])
        indices = indices + [indices[-1]] * pad
    size = _target_size(ele, raw.shape[-2], raw.shape[-1], len(raw), image_patch_size)
    timebase = native if native is not None else fps
    return VideoClip(
        frames=_resize(raw, size),
        indices=indices,
        timestamps=[i / timebase for i in indices],
        sample_fps=fps,
        native_fps=native,
        num_padded=pad,
        source=source,
    )


def _fetch_image(ele: dict, image_patch_size: int) -> Image.Image:
    """qwen-vl-utils' `fetch_image` (path, file://, http(s), base64, PIL), with clear errors."""
    try:
        return _qwen().fetch_image(ele, image_patch_size=image_patch_size)
    except Exception as exc:
        what = ele.get("image", ele.get("image_url"))
        what = (
            f"{type(what).__name__}" if not isinstance(what, str) else (what if len(what) < 200 else what[:200] + "...")
        )
        raise InputError(f"Cannot load image {what}: {exc}. Check the path/URL and that it is an image file.") from exc


def _processor_video_kwargs(clips: list[VideoClip]) -> dict:
    """Keyword arguments for `Qwen2_5_VLProcessor(...)` that keep our frames and timing intact."""
    kwargs = {
        "do_sample_frames": False,
        "do_resize": False,
        "video_metadata": [clip.processor_metadata() for clip in clips],
    }
    # Frames are already capped (every transformers the package admits knows this option).
    kwargs["cap_pixels_per_frame"] = False
    return {"videos_kwargs": kwargs}


def extract_vision_info(conversations) -> list[dict]:
    """The image/video content items of one conversation or a batch of them, in order."""
    if not conversations:
        return []
    if isinstance(conversations[0], dict):
        conversations = [conversations]
    items = []
    for conversation in conversations:
        for message in conversation:
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for ele in content:
                if not isinstance(ele, dict):
                    continue
                if any(k in ele for k in ("image", "image_url", "video")) or ele.get("type") in (
                    "image",
                    "image_url",
                    "video",
                ):
                    items.append(ele)
    return items


def process_vision_info(conversations, return_video_kwargs: bool = False, image_patch_size: int = 14):
    """Images and videos of chat messages, ready for `processor(images=..., videos=..., **video_kwargs)`.

    Returns `(images or None, videos or None)`, or with `return_video_kwargs=True`
    `(images, videos, video_kwargs)`. Images are PIL images; videos are float32 [T, 3, H, W]
    tensors with T even. `video_kwargs` is `{}` without videos, else
    `{"videos_kwargs": {"do_sample_frames": False, "do_resize": False, "video_metadata": [...]}}`
    (plus `cap_pixels_per_frame=False`; see the module docstring).
    Use `fetch_video` to get the sampled indices, timestamps and true fps as well.
    """
    images, clips = [], []
    for ele in extract_vision_info(conversations):
        if "image" in ele or "image_url" in ele:
            images.append(_fetch_image(ele, image_patch_size))
        elif "video" in ele:
            clips.append(fetch_video(ele, image_patch_size=image_patch_size))
        else:
            raise InputError(f"A {ele.get('type')!r} content item needs an {ele.get('type')!r} key: {ele}.")
    videos = [clip.frames for clip in clips]
    if not return_video_kwargs:
        return images or None, videos or None
    return images or None, videos or None, (_processor_video_kwargs(clips) if clips else {})
