"""The streaming engine: ingest frames once, answer at any moment, exactly (``docs/streaming.md``)."""

from . import families as _families  # noqa: F401  (registers the non-Qwen2.5 StreamOps)
from .model_ops import (
    Block,
    StreamOps,
    VideoLayout,
    register_stream_ops,
    stream_ops_for,
)
from .session import StreamAnswer, StreamEvent, StreamSession

__all__ = [
    "Block",
    "StreamAnswer",
    "StreamEvent",
    "StreamOps",
    "StreamSession",
    "VideoLayout",
    "register_stream_ops",
    "stream_ops_for",
]
