"""Model adapters: the seam between the memory and each vision-language model family."""

from . import registry
from .base import ModelAdapter, PreparedInputs, VideoSpan
from .pruning import PrunedPrefill, VideoReport, prune_prefill
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .switch import CALL_OPTIONS, FluxMemState, attach, detach, get_state, unwrap

registry.register(Qwen2_5_VLAdapter)

__all__ = [
    "ModelAdapter",
    "PreparedInputs",
    "VideoSpan",
    "PrunedPrefill",
    "VideoReport",
    "prune_prefill",
    "Qwen2_5_VLAdapter",
    "FluxMemState",
    "CALL_OPTIONS",
    "attach",
    "detach",
    "get_state",
    "unwrap",
    "registry",
]
