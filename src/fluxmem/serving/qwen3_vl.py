"""FluxMem for vLLM's Qwen3-VL family: Qwen3-VL, Qwen3-VL-MoE, and Qwen3.5 (+MoE) where vLLM has it.

What differs from Qwen2.5-VL:

- the processor writes each temporal grid step as its own block,
  ``<t seconds><|vision_start|><|video_pad|>*n<|vision_end|>``; with FluxMem ``n`` is that step's
  kept count (vLLM's own ``get_video_repl`` builds the blocks, embeddings only at the video tokens);
- deepstack: the kept embeddings carry the deepstack levels of the same tokens (anchors merged
  like the tokens, ``fluxmem.memory.merge_kept``) concatenated on the last dimension, as
  vLLM's Qwen3-VL expects;
- positions: vLLM's own method reads the token sequence (one block per step), so the original
  sequence is rebuilt block by block before it runs, and the kept tokens' positions are taken.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from functools import partial

import torch
from vllm.model_executor.models import qwen3_vl as _vllm
from vllm.model_executor.models.qwen2_vl import _create_qwen2vl_field_factory
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..errors import InputError
from .common import KEEP, InfoMixin, ModelMixin, ProcessorMixin, kept_counts


def stock_factory(parser):
    return _create_qwen2vl_field_factory(parser._spatial_merge_size)


class _Qwen3ProcessorMixin(ProcessorMixin):
    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        if self.info.fluxmem_settings() is None:
            return updates
        config = self.info.get_hf_config()
        tokenizer = self.info.get_tokenizer()
        merge = self.fluxmem_merge

        def replacement(item_idx: int, stock):
            item = out_mm_kwargs["video"][item_idx]
            counts = kept_counts(item, merge)
            if counts is None:
                return stock(item_idx)
            return _vllm.Qwen3VLMultiModalProcessor.get_video_repl(
                tokens_per_frame=[int(c) for c in counts],
                timestamps=item["timestamps"].data,
                tokenizer=tokenizer,
                vision_start_token_id=config.vision_start_token_id,
                vision_end_token_id=config.vision_end_token_id,
                video_token_id=config.video_token_id,
                select_token_id=True,
            )

        return [
            dataclasses.replace(u, replacement=partial(replacement, stock=u.replacement)) if u.modality == "video" else u
            for u in updates
        ]


class _Qwen3ModelMixin(ModelMixin):
    def fluxmem_expand(self, input_tokens, mm_features):
        """Qwen3-VL: each grid step is its own ``<|vision_start|> ... <|vision_end|>`` block inside
        the video's placeholder; every block gets its ``H*W`` video tokens back."""
        config = self.config
        video_token, start_token = int(config.video_token_id), int(config.vision_start_token_id)
        merge = int(config.vision_config.spatial_merge_size)
        out_tokens, kept_index, features = [], [], []
        cursor = 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset, length = feature.mm_position.offset, feature.mm_position.length
            keep_item = feature.data.get(KEEP) if feature.data is not None else None
            kept_index.extend(range(len(out_tokens), len(out_tokens) + offset - cursor))
            out_tokens.extend(input_tokens[cursor:offset])
            new_offset = len(out_tokens)
            if keep_item is None:
                kept_index.extend(range(new_offset, new_offset + length))
                out_tokens.extend(input_tokens[offset : offset + length])
            else:
                t, h, w = (int(v) for v in feature.data["video_grid_thw"].data.tolist())
                cells = (h // merge) * (w // merge)
                keep = keep_item.data.reshape(t, cells).bool()
                block = input_tokens[offset : offset + length]
                frame, i = 0, 0
                while i < len(block):
                    token = block[i]
                    kept_index.append(len(out_tokens))
                    out_tokens.append(token)
                    i += 1
                    if token != start_token:
                        continue
                    if frame >= t:
                        raise InputError("a Qwen3-VL video placeholder holds more frame blocks than its grid has steps.")
                    count = int(keep[frame].sum())
                    if block[i : i + count] != [video_token] * count:
                        raise InputError("a Qwen3-VL frame block does not hold its kept video tokens.")
                    base = len(out_tokens)
                    kept_index.extend((base + keep[frame].nonzero().squeeze(1)).tolist())
                    out_tokens.extend([video_token] * cells)
                    i += count
                    frame += 1
            position = dataclasses.replace(feature.mm_position, offset=new_offset,
                                           length=len(out_tokens) - new_offset, is_embed=None)  # fmt: skip
            features.append(dataclasses.replace(feature, mm_position=position))
            cursor = offset + length
        kept_index.extend(range(len(out_tokens), len(out_tokens) + len(input_tokens) - cursor))
        out_tokens.extend(input_tokens[cursor:])
        return out_tokens, features, kept_index


def _family(info_base, model_base, name: str):
    info = type(f"FluxMem{info_base.__name__}", (InfoMixin, info_base),
                {"fluxmem_stock_factory": staticmethod(stock_factory)})  # fmt: skip
    processor = type(f"FluxMem{name}Processor", (_Qwen3ProcessorMixin, _vllm.Qwen3VLMultiModalProcessor), {})
    model = type(f"FluxMem{model_base.__name__}", (_Qwen3ModelMixin, model_base), {"__module__": __name__})
    return MULTIMODAL_REGISTRY.register_processor(processor, info=info, dummy_inputs=_vllm.Qwen3VLDummyInputsBuilder)(
        model
    )


FluxMemQwen3VLForConditionalGeneration = _family(
    _vllm.Qwen3VLProcessingInfo, _vllm.Qwen3VLForConditionalGeneration, "Qwen3VL"
)

if importlib.util.find_spec("vllm.model_executor.models.qwen3_vl_moe") is not None:
    from vllm.model_executor.models import qwen3_vl_moe as _moe

    FluxMemQwen3VLMoeForConditionalGeneration = _family(
        _moe.Qwen3VLMoeProcessingInfo, _moe.Qwen3VLMoeForConditionalGeneration, "Qwen3VLMoe"
    )

if importlib.util.find_spec("vllm.model_executor.models.qwen3_5") is not None:
    from vllm.model_executor.models import qwen3_5 as _q35

    FluxMemQwen3_5ForConditionalGeneration = _family(
        _q35.Qwen3_5ProcessingInfo, _q35.Qwen3_5ForConditionalGeneration, "Qwen3_5"
    )
    FluxMemQwen3_5MoeForConditionalGeneration = _family(
        _q35.Qwen3_5MoeProcessingInfo, _q35.Qwen3_5MoeForConditionalGeneration, "Qwen3_5Moe"
    )

del torch
