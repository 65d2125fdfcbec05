"""Reading video files with PyAV: probing, and decoding only the frames asked for.

Frame `i` is the frame presented at `i / fps` seconds after the stream's first timestamp (the
constant-frame-rate model every Qwen video reader uses); a decoded frame's index is recovered from
its timestamp, so seeking is exact for ordinary files. Decoding seeks to the first wanted frame and
again whenever the next wanted frame is more than a few seconds ahead, so a 10 s window of a long
video costs about 10 s of decoding, not the whole file.

Every problem with the input (missing, not a video, corrupt, empty) becomes a `VideoError` naming
the file and the fix; no PyAV exception escapes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from dataclasses import dataclass, field

import av
import numpy as np
import torch

from ..errors import ConfigError, VideoError
from .sampling import first_frame_from, frame_at

logger = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://", "tcp://", "srt://")
_SEEK_GAP_S = 3.0  # seek instead of decoding through when the next wanted frame is this far ahead
_TAIL_SLACK_S = 1.0  # frames missing at the very end within this slack repeat the last frame
_OPEN_TIMEOUT_S = 10.0

_REENCODE = "Re-encode it, e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`"


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. `duration` is `num_frames / fps` (the span the frames cover)."""

    path: str
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    codec: str


@dataclass
class DecodedVideo:
    """Decoded frames (uint8 [T, 3, H, W], RGB), the frame indices they are, and the file's info.

    `num_decoded` counts the frames the decoder had to produce (seeking keeps it small)."""

    frames: torch.Tensor
    indices: list[int]
    info: VideoInfo
    num_decoded: int = 0
    timestamps: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.timestamps = [i / self.info.fps for i in self.indices]


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_SCHEMES)


def normalize_path(path) -> str:
    """A str path, with a `file://` prefix (as qwen-vl-utils accepts) removed."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise ConfigError(f"A video must be given as a path or URL string, got {type(path).__name__}.") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text.removeprefix("file://")


def _is_image_format(name: str) -> bool:
    """Demuxers FFmpeg uses for still images (and `tty`, which renders text files as a video)."""
    return name in ("image2", "tty") or name.endswith("_pipe")


def open_container(path, *, options: dict | None = None, format: str | None = None, hint: str | None = None):
    """`av.open` for reading, with a `VideoError` for every way it can fail. Returns (container, src).

    `format` forces a demuxer (e.g. "v4l2" for a camera); `hint` replaces the fix in the message."""
    src = normalize_path(path)
    url = is_url(src)
    if not url and format is None:
        if not os.path.exists(src):
            raise VideoError(f"Video file not found: {src} (working directory {os.getcwd()}). Check the path.")
        if os.path.isdir(src):
            raise VideoError(f"{src} is a directory, not a video file. Pass the path of a video file.")
        if os.path.getsize(src) == 0:
            raise VideoError(f"{src} is an empty file (0 bytes), not a video. Re-create or re-download it.")
    try:
        container = av.open(
            src, mode="r", format=format, options=options or {}, timeout=_OPEN_TIMEOUT_S if url else None
        )
    except Exception as exc:  # PyAV raises many FFmpegError/OSError subclasses; all mean "unreadable"
        kind = None if url or format is not None else _container_kind(src)
        if kind is not None and hint is None:
            raise VideoError(
                f"{src} is an {kind} file that cannot be read ({getattr(exc, 'strerror', None) or _reason(exc)}): it is probably truncated or "
                "incomplete (an interrupted download or recording loses the index). Re-download or re-record it."
            ) from exc
        raise VideoError(
            f"Cannot open {src} as a video ({exc.__class__.__name__}: {_reason(exc)}). "
            + (
                hint
                or (
                    "Check the URL and that the stream is live."
                    if url
                    else f"Is it a video file? If so, {_REENCODE[0].lower()}{_REENCODE[1:]}."
                )
            )
        ) from exc
    return container, src


def _container_kind(src: str) -> str | None:
    """The video container a file's first bytes announce (MP4/MOV, Matroska/WebM, AVI), if any."""
    try:
        with open(src, "rb") as file:
            head = file.read(12)
    except OSError:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "MP4/MOV"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "MKV/WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    return None


def video_stream(container, src: str):
    """The first video stream, after rejecting images and files without video. Sets fast decoding."""
    fmt = container.format.name
    if _is_image_format(fmt):
        container.close()
        raise VideoError(f"{src} is not a video (FFmpeg reads it as '{fmt}', a still image or text file); pass a video file.")
    if not container.streams.video:
        container.close()
        raise VideoError(
            f"{src} has no video stream (an audio-only file, or a truncated/corrupt video). "
            f"Check the file; if it plays elsewhere, {_REENCODE[0].lower()}{_REENCODE[1:]}."
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def native_fps(stream, src: str) -> float:
    """The stream's frame rate (average, else guessed, else base rate)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    raise VideoError(f"{src} does not state its frame rate. {_REENCODE} with `-r 30`.")


def _count_packets(container, stream) -> int:
    """Frame count of a stream whose header lacks one: demux (no decoding) and count packets."""
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:200]


def probe_video(path) -> VideoInfo:
    """fps, frame count, duration and size of a video file, without decoding pixels.

    The frame count comes from the container header; streams that lack it (Matroska/WebM, some
    AVI) are counted by demuxing their packets.
    """
    container, src = open_container(path)
    try:
        return _probe_open(container, src)
    finally:
        container.close()


def _probe_open(container, src: str) -> VideoInfo:
    stream = video_stream(container, src)
    fps = native_fps(stream, src)
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
        try:
            num_frames = _count_packets(container, stream)
        except Exception as exc:
            raise VideoError(f"{src} is corrupt: reading it failed ({_reason(exc)}). {_REENCODE}.") from exc
    if num_frames <= 0:
        raise VideoError(f"{src} has a video stream but no frames. Re-create the video; it is empty.")
    width = int(stream.codec_context.width or 0)
    height = int(stream.codec_context.height or 0)
    return VideoInfo(
        path=src,
        fps=fps,
        num_frames=num_frames,
        duration=num_frames / fps,
        width=width,
        height=height,
        codec=stream.codec_context.name,
    )


_PROGRESS: contextvars.ContextVar = contextvars.ContextVar("fluxmem_decode_progress", default=None)


@contextlib.contextmanager
def decode_progress(callback):
    """Within the block, ``callback(done, total)`` is called as the wanted frames of each video are
    decoded (for progress bars; ``total`` is per video)."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def decode_frames(
    path,
    indices=None,
    *,
    start_time: float | None = None,
    end_time: float | None = None,
) -> DecodedVideo:
    """Decode the frames `indices` (any order, repeats allowed) or, without indices, every frame
    shown in `[start_time, end_time]` seconds (default: the whole video).

    Returns uint8 RGB frames [T, 3, H, W] in the order asked, plus the file's `VideoInfo`.
    """
    container, src = open_container(path)
    try:
        info = _probe_open(container, src)
    finally:
        container.close()
    if indices is None:
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if value is not None and (not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value)):
                raise ConfigError(f"{name} must be a time in seconds >= 0, got {value!r}.")
        first = first_frame_from(start_time or 0.0, info.fps)
        last = info.num_frames - 1 if end_time is None else min(info.num_frames - 1, frame_at(end_time, info.fps))
        if first >= info.num_frames:
            raise VideoError(
                f"start time {start_time} s is beyond the end of {src} ({info.duration:.2f} s). Use an earlier start."
            )
        if last < first:
            raise ConfigError(f"The window {start_time} s .. {end_time} s of {src} holds no frame.")
        indices = list(range(first, last + 1))
    else:
        indices = [int(i) for i in indices]
        bad = [i for i in indices if i < 0 or i >= info.num_frames]
        if bad:
            raise ConfigError(f"Frame index {bad[0]} is out of range for {src}, which has {info.num_frames} frames.")
        if not indices:
            raise ConfigError(f"No frame indices given for {src}.")
    frames, num_decoded = _read(src, info, indices)
    return DecodedVideo(frames=frames, indices=indices, info=info, num_decoded=num_decoded)


def read_indices(src: str, info: VideoInfo, indices: list[int]) -> torch.Tensor:
    """Decode `indices` of a probed file into a uint8 [T, 3, H, W] tensor, in the order given."""
    return _read(src, info, indices)[0]


def _read(src: str, info: VideoInfo, indices: list[int]) -> tuple[torch.Tensor, int]:
    container, src = open_container(src)
    try:
        stream = video_stream(container, src)
        by_index, num_decoded = _decode_selected(container, stream, info, sorted(set(indices)))
    finally:
        container.close()
    array = np.stack([by_index[i] for i in indices])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), num_decoded


def _decode_selected(container, stream, info: VideoInfo, targets: list[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the sorted distinct frame `targets`; the frame taken for a target is the first one
    whose index is >= it (exactly it, for constant-rate files). Also returns the decoded count."""
    fps, src = info.fps, info.path
    time_base = float(stream.time_base)
    start_pts = stream.start_time or 0
    gap = max(1, int(_SEEK_GAP_S * fps))

    def index_of(frame, previous: int | None) -> int | None:
        if frame.pts is None:
            return None if previous is None else previous + 1
        return round((frame.pts - start_pts) * time_base * fps)

    def segment(target: int, rewind: bool):
        """Decoded frames from a keyframe at or before `target`, seeking when it is far into the
        file; else from the start (rewinding if the container was read already). -> (frames, sought)"""
        if target > gap:
            seconds = max(0.0, (target - 0.5) / fps)
            container.seek(start_pts + int(seconds / time_base), stream=stream, backward=True, any_frame=False)
            return container.decode(stream), True
        if rewind:
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        return container.decode(stream), False

    out: dict[int, np.ndarray] = {}
    ti, pos, last_frame, last_index = 0, None, None, -1
    frames, sought, fresh_segment, approaching = None, False, False, None
    num_decoded = 0
    try:
        while ti < len(targets):
            target = targets[ti]
            # Seek once per target that lies far ahead (never again while decoding towards it).
            if frames is None or (target != approaching and pos is not None and target - pos > gap):
                frames, sought = segment(target, rewind=frames is not None)
                pos, fresh_segment = None, True
            approaching = target
            frame = next(frames, None)
            if frame is None:
                break
            num_decoded += 1
            idx = index_of(frame, pos)
            if fresh_segment and sought and (idx is None or idx > target):
                # The seek landed past the target (or lost timestamps): decode from the start instead.
                frames, sought = segment(0, rewind=True)
                continue
            if idx is None:
                idx = 0
            fresh_segment = False
            pos, last_frame, last_index = idx, frame, idx
            filled = ti
            while ti < len(targets) and targets[ti] <= idx:
                out[targets[ti]] = frame.to_ndarray(format="rgb24")
                ti += 1
            if ti != filled and (report := _PROGRESS.get()) is not None:
                report(ti, len(targets))
    except Exception as exc:
        raise VideoError(
            f"{src} is truncated or corrupt: decoding failed after frame {last_index} ({_reason(exc)}). {_REENCODE}."
        ) from exc

    if ti < len(targets):
        if last_frame is None:
            raise VideoError(f"{src} is corrupt: no frame could be decoded. {_REENCODE}.")
        if targets[-1] - last_index > max(1, int(_TAIL_SLACK_S * fps)):
            raise VideoError(
                f"{src} is truncated or corrupt: it should hold {info.num_frames} frames but decoding stops "
                f"at frame {last_index}. {_REENCODE}."
            )
        logger.debug(
            "%s: frames %s..%s missing at the end; repeating frame %s", src, targets[ti], targets[-1], last_index
        )
        tail = last_frame.to_ndarray(format="rgb24")
        for target in targets[ti:]:
            out[target] = tail
    return out, num_decoded
