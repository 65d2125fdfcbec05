"""Model adapters: the seam between the memory and each vision-language model family."""

from . import registry
from .base import ModelAdapter, PreparedInputs, VideoSpan
from .pruning import PrunedPrefill, VideoReport, prune_prefill
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_5 import Qwen3_5Adapter, Qwen3_5MoeAdapter
from .qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from .switch import CALL_OPTIONS, FluxMemState, attach, detach, get_state, unwrap

registry.register(Qwen2_5_VLAdapter)
for _adapter in (Qwen2VLAdapter, Qwen3VLAdapter, Qwen3VLMoeAdapter, Qwen3_5Adapter, Qwen3_5MoeAdapter):
    registry.register(_adapter)

__all__ = [
    "ModelAdapter",
    "PreparedInputs",
    "VideoSpan",
    "PrunedPrefill",
    "VideoReport",
    "prune_prefill",
    "Qwen2_5_VLAdapter",
    "Qwen2VLAdapter",
    "Qwen3VLAdapter",
    "Qwen3VLMoeAdapter",
    "Qwen3_5Adapter",
    "Qwen3_5MoeAdapter",
    "FluxMemState",
    "CALL_OPTIONS",
    "attach",
    "detach",
    "get_state",
    "unwrap",
    "registry",
]
