"""Frame sources for the live engine: files, cameras, network streams and in-memory clips.

`open_source(...)` gives an iterator of `(frame, timestamp)` pairs - `frame` an HxWx3 uint8 RGB
array, `timestamp` seconds since the start of the stream - that is also a context manager closing
the underlying container. A source that fails after it has produced frames (a dropped network
connection, a corrupt tail) logs a warning and ends; only failures before the first frame raise.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import time

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, VideoError
from .decode import normalize_path, open_container, video_stream
from .pixels import uint8_pixels

logger = logging.getLogger(__name__)

_CAMERA_RE = re.compile(r"^/dev/video\d+$")
# Protocols that carry live streams; http(s) URLs are mostly files and are treated like files.
_LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "udp://", "tcp://", "srt://")


class FrameSource:
    """Iterator (and context manager) of `(frame uint8 HxWx3 RGB, timestamp_s)`.

    Attributes: `name` (what was opened), `fps` (native rate, None when unknown), `is_live`
    (a camera or an rtsp/rtmp/udp/... stream: never paced; timestamps count from its first frame).
    """

    def __init__(self, source, *, realtime: bool = False, fps: float | None = None, options: dict | None = None):
        if fps is not None and (
            isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0 or not math.isfinite(fps)
        ):
            raise ConfigError(f"fps must be a positive number, got {fps!r}.")
        self._container = None
        self._realtime = bool(realtime)
        self._clock_origin: tuple[float, float] | None = None  # (monotonic time, stream time) of frame 0
        self.fps: float | None = float(fps) if fps is not None else None
        self.is_live = False
        if _is_frame_collection(source):
            if fps is None:
                raise ConfigError("An in-memory video source needs its frame rate: open_source(frames, fps=...).")
            self.name = f"<{len(source)} frames in memory>"
            self._frames = self._memory_frames(source)
        else:
            self._frames = self._open_av(source, options)

    # -- opening ---------------------------------------------------------------------------
    def _open_av(self, source, options: dict | None):
        if isinstance(source, int) and not isinstance(source, bool):
            source = f"/dev/video{source}"
        src = normalize_path(source)
        if _CAMERA_RE.match(src):
            if not os.path.exists(src):
                found = ", ".join(sorted(glob.glob("/dev/video*"))) or "none"
                raise VideoError(
                    f"Camera {src} not found (cameras present: {found}). Connect it or pick another index."
                )
            hint = "Check that the camera works and is not in use by another program (v4l2-ctl --list-devices)."
            self._container, self.name = open_container(src, format="v4l2", options=options, hint=hint)
            self.is_live = True
        else:
            opts = dict(options or {})
            if src.lower().startswith(("rtsp://", "rtsps://")):
                opts.setdefault("rtsp_transport", "tcp")  # UDP loses packets behind NAT/firewalls
            self._container, self.name = open_container(src, options=opts)
            self.is_live = src.lower().startswith(_LIVE_SCHEMES)
        self._stream = video_stream(self._container, self.name)
        rate = self._stream.average_rate or self._stream.guessed_rate
        if rate is not None and float(rate) > 0:
            self.fps = float(rate)  # the stream's own rate wins over a given fps
        return self._av_frames()

    # -- frame generators ------------------------------------------------------------------
    def _memory_frames(self, frames):
        for i, frame in enumerate(frames):
            yield _to_rgb_array(frame, i), i / self.fps

    def _av_frames(self):
        stream = self._stream
        time_base = float(stream.time_base) if stream.time_base else None
        origin = None if self.is_live else (stream.start_time or 0)
        count, wall_start = 0, time.monotonic()
        try:
            for frame in self._container.decode(stream):
                if frame.pts is not None and time_base:
                    if origin is None:
                        origin = frame.pts
                    timestamp = (frame.pts - origin) * time_base
                elif self.fps and not self.is_live:
                    timestamp = count / self.fps
                else:
                    timestamp = time.monotonic() - wall_start
                image = frame.to_ndarray(format="rgb24")
                count += 1
                yield image, float(timestamp)
        except Exception as exc:
            if count == 0:
                raise VideoError(f"{self.name}: no frames could be read ({exc}). Check the source.") from exc
            logger.warning("%s: stream ended after %d frames: %s", self.name, count, exc)
            return
        if count == 0:
            raise VideoError(f"{self.name}: no frames could be read; the video is empty. Check the source.")
        promised = stream.frames or 0
        if not self.is_live and promised - count > max(1, self.fps or 1):
            logger.warning("%s: stream ended after %d of its %d frames (truncated file?)", self.name, count, promised)

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        if self._frames is None:
            raise StopIteration
        frame, timestamp = next(self._frames)
        if self._realtime and not self.is_live:
            self._pace(timestamp)
        return frame, timestamp

    def _pace(self, timestamp: float) -> None:
        """Sleep until the frame is due: its timestamp after the first frame, in wall-clock time."""
        now = time.monotonic()
        if self._clock_origin is None:
            self._clock_origin = (now, timestamp)
            return
        due = self._clock_origin[0] + (timestamp - self._clock_origin[1])
        if due > now:
            time.sleep(due - now)

    def close(self) -> None:
        """Stop decoding and release the file, camera or connection. Safe to call twice."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _is_frame_collection(source) -> bool:
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 4:
            raise ConfigError(f"An in-memory video must be [T, H, W, 3], got shape {tuple(source.shape)}.")
        return True
    return isinstance(source, (list, tuple))


def _to_rgb_array(frame, position: int) -> np.ndarray:
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3:
        return uint8_pixels(frame, f"frame {position} of an in-memory video")  # uint8 0..255 or floats 0..1
    raise ConfigError(f"Frame {position} of an in-memory video is not an HxWx3 image or a PIL image.")


def open_source(
    source, *, realtime: bool = False, fps: float | None = None, options: dict | None = None
) -> FrameSource:
    """Open a stream of `(frame, timestamp)` for the live engine.

    `source`: a video file path; a camera (`/dev/videoN` or the integer N, read through v4l2); a
    network URL (rtsp://, rtmp://, http(s)://, ...); or frames in memory (a [T, H, W, 3] uint8
    array or a list of PIL images / HxWx3 arrays) together with `fps` (for other sources `fps` is only
    a fallback when the stream states no rate). `realtime=True` paces files,
    http(s) videos and in-memory clips at their true speed (live sources are paced by nature). `options` go to
    FFmpeg (e.g. {"video_size": "640x480", "framerate": "30"} for a camera).
    """
    return FrameSource(source, realtime=realtime, fps=fps, options=options)
