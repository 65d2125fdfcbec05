"""The FluxMem algorithm on plain tensors: no models, tokens or files (``algorithm.md``)."""

from .config import FluxMemConfig, check_config
from .hierarchy import (
    LONG,
    MID,
    SHORT,
    CompressResult,
    FluxMemory,
    FrameRecord,
    StepUpdate,
    compress,
    merge_full,
    merge_kept,
)
from .otsu import otsu_threshold

__all__ = [
    "check_config",
    "FluxMemConfig",
    "FluxMemory",
    "CompressResult",
    "FrameRecord",
    "StepUpdate",
    "compress",
    "merge_kept",
    "merge_full",
    "otsu_threshold",
    "SHORT",
    "MID",
    "LONG",
]
