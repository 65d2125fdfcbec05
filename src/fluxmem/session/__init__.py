"""The streaming engine: ingest frames once, answer at any moment, exactly (``docs/streaming.md``)."""

from ..adapters.streaming import Block, StreamOps, VideoLayout
from .session import StreamAnswer, StreamEvent, StreamSession, stream_ops_for

__all__ = [
    "Block",
    "StreamAnswer",
    "StreamEvent",
    "StreamOps",
    "StreamSession",
    "VideoLayout",
    "stream_ops_for",
]
