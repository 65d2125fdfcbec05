"""FluxMem for vLLM's Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``)."""

from __future__ import annotations

import dataclasses
from functools import partial

from vllm.model_executor.models import qwen2_5_vl as _vllm
from vllm.model_executor.models.qwen2_vl import _create_qwen2vl_field_factory
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig

from .common import InfoMixin, ModelMixin, ProcessorMixin, kept_counts


def stock_factory(parser):
    """vLLM's Qwen2.5-VL fields for embedding items (its parser's factory plus the frame spacing)."""
    base = _create_qwen2vl_field_factory(parser._spatial_merge_size)

    def factory(inputs):
        return dict(base(inputs), second_per_grid_ts=MultiModalFieldConfig.batched("video", keep_on_cpu=True))

    return factory


def pruned_video_updates(processor, updates, out_mm_kwargs, merge: int, video_token_id: int):
    """vLLM's prompt updates with each FluxMem video's placeholder cut to its kept count."""

    def replacement(item_idx: int, stock):
        counts = kept_counts(out_mm_kwargs["video"][item_idx], merge)
        if counts is None:
            return stock(item_idx) if callable(stock) else stock
        return [video_token_id] * sum(counts)

    out = []
    for update in updates:
        if update.modality == "video":
            update = dataclasses.replace(update, replacement=partial(replacement, stock=update.replacement))
        out.append(update)
    return out


class FluxMemQwen2_5_VLProcessingInfo(InfoMixin, _vllm.Qwen2_5_VLProcessingInfo):
    fluxmem_stock_factory = staticmethod(stock_factory)


class PrunedVideoPrompts:
    """Processor mixin of the Qwen2-VL-style families: with FluxMem settings, each video's
    placeholder run holds its kept tokens only."""

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        if self.info.fluxmem_settings() is None:
            return updates
        video_token_id = int(self.info.get_hf_config().video_token_id)
        return pruned_video_updates(self, updates, out_mm_kwargs, self.fluxmem_merge, video_token_id)


class FluxMemQwen2_5_VLProcessor(PrunedVideoPrompts, ProcessorMixin, _vllm.Qwen2_5_VLMultiModalProcessor):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    FluxMemQwen2_5_VLProcessor,
    info=FluxMemQwen2_5_VLProcessingInfo,
    dummy_inputs=_vllm.Qwen2_5_VLDummyInputsBuilder,
)
class FluxMemQwen2_5_VLForConditionalGeneration(ModelMixin, _vllm.Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL; with ``hf_overrides={"fluxmem": {...}}`` videos arrive FluxMem-compressed."""
