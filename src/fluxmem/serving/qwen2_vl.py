"""FluxMem for vLLM's Qwen2-VL (``Qwen2VLForConditionalGeneration``)."""

from __future__ import annotations

from vllm.model_executor.models import qwen2_vl as _vllm
from vllm.multimodal import MULTIMODAL_REGISTRY

from .common import InfoMixin, ModelMixin, ProcessorMixin
from .qwen2_5_vl import PrunedVideoPrompts


def stock_factory(parser):
    return _vllm._create_qwen2vl_field_factory(parser._spatial_merge_size)


class FluxMemQwen2VLProcessingInfo(InfoMixin, _vllm.Qwen2VLProcessingInfo):
    fluxmem_stock_factory = staticmethod(stock_factory)


class FluxMemQwen2VLProcessor(PrunedVideoPrompts, ProcessorMixin, _vllm.Qwen2VLMultiModalProcessor):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    FluxMemQwen2VLProcessor,
    info=FluxMemQwen2VLProcessingInfo,
    dummy_inputs=_vllm.Qwen2VLDummyInputsBuilder,
)
class FluxMemQwen2VLForConditionalGeneration(ModelMixin, _vllm.Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL; with ``hf_overrides={"fluxmem": {...}}`` videos arrive FluxMem-compressed."""
