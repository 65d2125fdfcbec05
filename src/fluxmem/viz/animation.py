"""The per-step overlays as a video (MP4 through PyAV) or an animated GIF (Pillow)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..outputs import atomic_file

FORMATS = ("mp4", "gif")


def _even(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``image`` pasted on a white canvas of ``size`` (even sides, as yuv420p needs)."""
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, (0, 0))
    return np.asarray(canvas)


MIN_FPS = 0.002
"""Slowest animation: a GIF stores a frame's delay in 1/100 s in 16 bits (655.35 s at most)."""


def check_fps(fps, flag: str = "animation fps") -> None:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps < MIN_FPS:
        raise ConfigError(f"{flag} must be a number of overlays per second >= {MIN_FPS} (a GIF holds a frame at most 655 s), got {fps!r}.")


def write_animation(images: list[Image.Image], path, *, fps: float = 2.0) -> Path:
    """Write ``images`` (one per grid step) to ``path``; the suffix picks MP4 (H.264, MPEG-4 Part 2
    where H.264 is missing) or GIF. ``fps``: overlays shown per second."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise ConfigError(f"animation must be .mp4 or .gif, got {path.name!r}.")
    if not images:
        raise ConfigError("no overlay to animate: the video produced no grid step.")
    check_fps(fps)
    with atomic_file(path) as temporary:  # a crash leaves no half-written animation
        _write(images, temporary, kind, fps)
    return path


def _write(images: list[Image.Image], path: Path, kind: str, fps: float) -> None:
    width = max(image.width for image in images)
    height = max(image.height for image in images)
    if kind == "gif":
        frames = [Image.fromarray(_even(image, (width, height))) for image in images]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0, optimize=True)
        return
    import av

    size = (width + width % 2, height + height % 2)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=rate)
            stream.options = {"crf": "18", "preset": "medium"}
        except Exception:  # pragma: no cover - PyAV built without x264
            stream = container.add_stream("mpeg4", rate=rate)
            stream.options = {"qscale": "2"}
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(image, size)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
