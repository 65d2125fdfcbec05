"""The sample clip shipped inside the package, for ``fluxmem quickstart``.

Twenty seconds of a red square crossing a still room from left to right: the right answer is
known, and most of every frame repeats the frames before it (what the memory drops). The file
``sample.mp4`` beside this module was written once by :func:`write_sample_clip`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SAMPLE_FILE = "sample.mp4"
SAMPLE_QUESTION = "What moves in this video, and in which direction?"
SAMPLE_SECONDS = 20
SAMPLE_FPS = 4
SAMPLE_HEIGHT, SAMPLE_WIDTH = 224, 336
SQUARE = 56
SQUARE_COLOR = (220, 30, 30)


def sample_frames() -> np.ndarray:
    """``[T, H, W, 3]`` uint8: a wall, a floor and a dark table that never move, and a red square
    whose left edge goes from 0 to ``W - SQUARE`` over the clip, one step per frame."""
    count = SAMPLE_SECONDS * SAMPLE_FPS
    rows = np.linspace(150, 190, SAMPLE_HEIGHT, dtype=np.float32)[:, None, None]
    room = np.broadcast_to(rows, (SAMPLE_HEIGHT, SAMPLE_WIDTH, 3)).copy()
    floor = SAMPLE_HEIGHT * 2 // 3
    room[floor:] = (120, 110, 100)
    room[floor - 28 : floor + 20, 196:308] = (70, 50, 40)  # the table, standing on the floor
    room = room.astype(np.uint8)
    frames = np.repeat(room[None], count, axis=0)
    top = floor - SQUARE - 8
    for index, left in enumerate(np.linspace(0, SAMPLE_WIDTH - SQUARE, count).round().astype(int)):
        frames[index, top : top + SQUARE, left : left + SQUARE] = SQUARE_COLOR
    return frames


def write_sample_clip(path: str | os.PathLike) -> Path:
    """Encode :func:`sample_frames` to ``path`` (H.264, a few tens of KB)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=SAMPLE_FPS)
        stream.width, stream.height = SAMPLE_WIDTH, SAMPLE_HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryslow"}
        for frame in sample_frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@contextlib.contextmanager
def sample_clip() -> Iterator[Path]:
    """The path of the shipped sample clip (a real file for as long as the context lasts, also when
    the package is installed as a zip)."""
    resource = importlib.resources.files(__package__) / SAMPLE_FILE
    with importlib.resources.as_file(resource) as path:
        yield path
