"""The streaming engine: ingest frames once, answer at any moment, exactly (``docs/streaming.md``)."""

from .model_ops import StreamOps, VideoLayout, register_stream_ops, stream_ops_for
from .session import StreamAnswer, StreamEvent, StreamSession

__all__ = [
    "StreamAnswer",
    "StreamEvent",
    "StreamOps",
    "StreamSession",
    "VideoLayout",
    "register_stream_ops",
    "stream_ops_for",
]
