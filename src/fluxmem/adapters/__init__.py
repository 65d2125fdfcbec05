"""Model adapters: the seam between the memory and each vision-language model family."""

from . import registry
from .base import ModelAdapter, PreparedInputs, VideoSpan
from .pruning import PrunedPrefill, VideoReport, prune_prefill
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_5 import Qwen3_5Adapter, Qwen3_5MoeAdapter
from .qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from .switch import (
    CALL_OPTIONS,
    FluxMemState,
    MemoryReport,
    detach,
    enabled,
    get_state,
    install,
    unwrap,
)

__all__ = [
    "CALL_OPTIONS",
    "FluxMemState",
    "MemoryReport",
    "ModelAdapter",
    "PreparedInputs",
    "PrunedPrefill",
    "Qwen2VLAdapter",
    "Qwen2_5_VLAdapter",
    "Qwen3VLAdapter",
    "Qwen3VLMoeAdapter",
    "Qwen3_5Adapter",
    "Qwen3_5MoeAdapter",
    "VideoReport",
    "VideoSpan",
    "detach",
    "enabled",
    "get_state",
    "install",
    "prune_prefill",
    "registry",
    "unwrap",
]
