"""Tiny synthetic videos whose frames say which frame they are, for tests and demos.

Frame `i` is a grey background with one bright square: the square's cell on an 8x8 grid encodes
`i % 64`, the background level encodes `(i // 64) % 4`, so `read_synthetic_index` recovers `i`
(for i < 256) from a decoded - even lossily compressed or resized - frame.
"""

from __future__ import annotations

import av
import numpy as np
import torch

_GRID = 8
_LEVELS = (40, 80, 120, 160)


def synthetic_frame(index: int, size: int = 64) -> np.ndarray:
    """Frame `index` as uint8 [size, size, 3] RGB (size a multiple of 8)."""
    cell = size // _GRID
    position, level = index % (_GRID * _GRID), (index // (_GRID * _GRID)) % len(_LEVELS)
    frame = np.full((size, size, 3), _LEVELS[level], dtype=np.uint8)
    row, col = divmod(position, _GRID)
    frame[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 255
    return frame


def read_synthetic_index(frame) -> int:
    """Inverse of `synthetic_frame`: accepts HxWx3 or 3xHxW, uint8 or float 0..255, any size multiple of 8."""
    array = (
        frame.detach().cpu().float().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame, dtype=np.float32)
    )
    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    grey = array.mean(axis=2)
    height, width = grey.shape
    cells = grey.reshape(_GRID, height // _GRID, _GRID, width // _GRID).mean(axis=(1, 3))
    position = int(cells.argmax())
    background = float(np.median(grey))
    level = int(np.argmin([abs(background - v) for v in _LEVELS]))
    return level * _GRID * _GRID + position


def write_synthetic_clip(
    path,
    num_frames: int,
    fps: int,
    *,
    size: int = 64,
    codec: str = "mpeg4",
    gop: int | None = None,
) -> str:
    """Encode frames 0..num_frames-1 at `fps` into `path` (container from the extension).

    `gop` sets the keyframe interval (small values exercise seeking). With `num_frames=0` the file
    holds a video stream without frames (for containers that allow it, e.g. .avi).
    """
    path = str(path)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        if gop is not None:
            stream.codec_context.gop_size = gop
        if num_frames == 0:
            container.start_encoding()
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, size), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
