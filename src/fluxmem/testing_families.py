"""Tiny offline models of the other Qwen vision-language families, for tests and benchmarks.

Companion of :mod:`fluxmem.testing` (which builds Qwen2.5-VL): the same byte-level tokenizer and
chat template, each family's own config class at toy sizes with its real structure (Qwen3-VL's
deepstack mergers, Qwen3.5's linear-attention layers, the MoE blocks), and the processor class
the family ships with (``Qwen2VLProcessor`` or ``Qwen3VLProcessor``, which writes a timestamp
before every grid step of a video). Each family has its real patch size (:data:`PATCH_SIZE`:
14 px for Qwen2-VL, 16 px for Qwen3-VL and Qwen3.5) and merge size 2, so that one merged token
covers 28x28 or 32x32 pixels.

``build_tiny(family)`` returns ``(model, processor)`` in float32 on the CPU, in eval mode.
"""

from __future__ import annotations

import os

import torch

from .testing import (
    QWEN_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
    instantiate_tiny,
)

FAMILIES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
"""``config.model_type`` of every family this module builds."""

PATCH_SIZE = {"qwen2_vl": 14, "qwen3_vl": 16, "qwen3_vl_moe": 16, "qwen3_5": 16, "qwen3_5_moe": 16}
"""Each family's real vision patch size (pixels): one merged token covers ``2 * patch`` pixels."""
_MERGE = 2
_TEMPORAL = 2


def _ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def _special(ids: dict[str, int]) -> dict:
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _text_ids(ids: dict[str, int]) -> dict:
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def build_family_processor(family: str, tokenizer=None, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """The processor class ``family`` ships with, around the tiny tokenizer.

    Qwen2-VL: ``Qwen2VLProcessor`` (per-frame pixel budget). Qwen3-VL and Qwen3.5:
    ``Qwen3VLProcessor`` with ``Qwen3VLVideoProcessor``, whose budget covers the whole clip (so the
    ceiling is raised to fit 64 frames of ``max_pixels``) and which needs the frame rate to write
    the ``<t seconds>`` timestamps.
    """
    from transformers import Qwen2VLImageProcessor

    if family not in PATCH_SIZE:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    patch = PATCH_SIZE[family]
    cell = patch * _MERGE
    min_pixels = cell * cell * 4 if min_pixels is None else min_pixels
    max_pixels = cell * cell * 64 if max_pixels is None else max_pixels
    tokenizer = tokenizer or build_tokenizer()
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=patch, merge_size=_MERGE, temporal_patch_size=_TEMPORAL)
    if family == "qwen2_vl":
        from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor

        return Qwen2VLProcessor(
            image_processor=image_processor,
            video_processor=Qwen2VLVideoProcessor(
                size=size,
                patch_size=patch,
                merge_size=_MERGE,
                temporal_patch_size=_TEMPORAL,
                cap_pixels_per_frame=False,
            ),
            tokenizer=tokenizer,
            chat_template=QWEN_CHAT_TEMPLATE,
        )
    if family in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"):
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        video_size = {"shortest_edge": min_pixels, "longest_edge": max_pixels * 64}
        return Qwen3VLProcessor(
            image_processor=image_processor,
            video_processor=Qwen3VLVideoProcessor(
                size=video_size,
                patch_size=patch,
                merge_size=_MERGE,
                temporal_patch_size=_TEMPORAL,
                cap_pixels_per_frame=False,
            ),
            tokenizer=tokenizer,
            chat_template=QWEN_CHAT_TEMPLATE,
        )
    raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")


def _vision_common(text_hidden: int, patch: int) -> dict:
    return {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text_hidden,
        "patch_size": patch,
        "spatial_merge_size": _MERGE,
        "temporal_patch_size": _TEMPORAL,
    }


def tiny_family_config(family: str, tokenizer=None, **text_overrides):
    """A config of ``family`` with its real structure at toy sizes."""
    tokenizer = tokenizer or build_tokenizer()
    ids = _ids(tokenizer)
    hidden = 64
    base_text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        **_text_ids(ids),
    )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        text = dict(base_text, num_hidden_layers=2)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
        text.update(text_overrides)
        vision = {
            "depth": 2, "embed_dim": 32, "hidden_size": text["hidden_size"], "mlp_ratio": 2, "num_heads": 2,
            "patch_size": PATCH_SIZE[family], "spatial_merge_size": _MERGE, "temporal_patch_size": _TEMPORAL,
        }  # fmt: skip
        return Qwen2VLConfig(text_config=text, vision_config=vision, **_special(ids), **_text_ids(ids))
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        text = dict(base_text, num_hidden_layers=3, head_dim=16)
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True,
        }  # fmt: skip
        if family == "qwen3_vl_moe":
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
        text.update(text_overrides)
        vision = dict(_vision_common(text["hidden_size"], PATCH_SIZE[family]), num_position_embeddings=64, deepstack_visual_indexes=[0, 1])
        if family == "qwen3_vl":
            from transformers import Qwen3VLConfig as config_class
        else:
            from transformers import Qwen3VLMoeConfig as config_class
        return config_class(text_config=text, vision_config=vision, **_special(ids))
    if family in ("qwen3_5", "qwen3_5_moe"):
        # 4 layers: 3 linear attention (gated delta rule, recurrent state) + 1 full attention
        text = dict(
            base_text,
            num_hidden_layers=4,
            head_dim=32,
            linear_conv_kernel_dim=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        )
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1], "mrope_interleaved": True,
        }  # fmt: skip
        if family == "qwen3_5_moe":
            text.update(
                num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
            )
            text.pop("intermediate_size")
        text.update(text_overrides)
        vision = dict(_vision_common(text["hidden_size"], PATCH_SIZE[family]), num_position_embeddings=64)
        if family == "qwen3_5":
            from transformers import Qwen3_5Config as config_class
        else:
            from transformers import Qwen3_5MoeConfig as config_class
        return config_class(text_config=text, vision_config=vision, **_special(ids))
    raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")


def model_class_for(family: str):
    """The ``...ForConditionalGeneration`` class of ``family``."""
    import transformers

    names = {
        "qwen2_vl": "Qwen2VLForConditionalGeneration",
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
        "qwen3_5": "Qwen3_5ForConditionalGeneration",
        "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
    }
    if family not in names:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    return getattr(transformers, names[family])


def build_tiny(
    family: str,
    save_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    model_class=None,
    **text_overrides,
):
    """``(model, processor)``: a random tiny model of ``family`` (see :data:`FAMILIES`).

    As :func:`fluxmem.testing.build_tiny_qwen2_5_vl`: float32, CPU, eval mode, the output head
    scaled so that greedy decoding is decisive; with ``save_dir`` both are saved.
    """
    model_class = model_class or model_class_for(family)
    tokenizer = build_tokenizer()
    processor = build_family_processor(family, tokenizer)
    config = tiny_family_config(family, tokenizer, **text_overrides)
    return instantiate_tiny(model_class, config, processor, seed=seed, attn_implementation=attn_implementation,
                            save_dir=save_dir)


# ------------------------------------------------------------------------ inputs and references
def video_inputs(processor, frames: torch.Tensor, question: str = "What is moving in the video?", fps: float = 2.0):
    """Processor inputs for one video given as frames (``[T, 3, H, W]`` uint8, T even) and a
    question, with the ``video_metadata`` that Qwen3VLProcessor needs for its timestamps."""
    messages = [{"role": "user", "content": [{"type": "video", "video": "frames"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    count = int(frames.shape[0])
    metadata = {"total_num_frames": count, "fps": fps, "frames_indices": list(range(count)), "duration": count / fps}
    return processor(
        text=[text],
        videos=[frames],
        padding=True,
        return_tensors="pt",
        do_sample_frames=False,
        video_metadata=[metadata],
    )


def _merge_reference(values: torch.Tensor, result) -> torch.Tensor:
    """Cluster means over SDC clusters, written plainly (a loop), as an independent reference."""
    _, h, w = result.grid_thw
    cells = h * w
    out = values.clone()
    for index, record in enumerate(result.frames):
        if record.merged_into is None:
            continue
        for anchor in sorted(set(record.merged_into[record.merged_into >= 0].tolist())):
            members = (record.merged_into == anchor).nonzero().squeeze(1) + index * cells
            out[index * cells + anchor] = values[members].float().mean(0).to(values.dtype)
    return out


@torch.no_grad()
def reference_pruned_greedy(model, inputs, config=None, max_new_tokens: int = 8, *, deepstack: bool = True,
                            positions: torch.Tensor | None = None) -> list[int]:  # fmt: skip
    """Greedy tokens of the stock LANGUAGE MODEL run by hand on the tokens FluxMem keeps, at their
    original positions: the reference that ``generate(use_fluxmem=True)`` must equal.

    Uses only the model's own methods (``get_video_features``, ``get_placeholder_mask``,
    ``get_rope_index``, ``language_model``) and :func:`fluxmem.memory.compress`; deepstack features
    (Qwen3-VL) are kept at the same positions as their tokens and merged over the same clusters.
    ``config=None`` keeps every token (the stock model); ``deepstack=False`` leaves the deepstack
    features out (a negative control). ``positions`` ``[3, 1, L]``: the prompt's M-RoPE positions
    (default: the model's ``get_rope_index``); decoding continues one past their largest. One
    sample, one video, no images.
    """
    from transformers import DynamicCache

    from .adapters import hf
    from .memory import compress

    core = model.model
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError("reference_pruned_greedy takes one sample")
    video_token = int(model.config.video_token_id)
    merge = int(model.config.vision_config.spatial_merge_size)
    grid_thw = inputs["video_grid_thw"]
    embeds = core.get_input_embeddings()(ids)
    encoded = core.get_video_features(inputs["pixel_values_videos"], grid_thw, return_dict=True)
    video = torch.cat(encoded.pooler_output)
    _, video_mask = core.get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video)
    embeds = embeds.masked_scatter(video_mask, video)
    if positions is None:
        positions, _ = core.get_rope_index(
            ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            video_grid_thw=grid_thw,
            attention_mask=inputs.get("attention_mask"),
        )
    levels = [torch.cat(level) for level in (getattr(encoded, "deepstack_features", None) or [])]
    is_video = ids[0] == video_token
    video_at = is_video.nonzero().squeeze(1)
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    if config is not None:
        t, h, w = (int(v) for v in grid_thw[0].tolist())
        result = compress(
            video, (t, h // merge, w // merge), config,
            temporal_patch_size=int(model.config.vision_config.temporal_patch_size),
        )  # fmt: skip
        keep[video_at] = result.keep
        embeds = embeds.clone()
        embeds[0, video_at] = result.features.to(embeds.dtype)
        levels = [_merge_reference(level, result)[result.keep] for level in levels]
    kept = keep.nonzero().squeeze(1)
    extra = {}
    if levels and deepstack:
        extra = {"visual_pos_masks": is_video[kept].unsqueeze(0), "deepstack_visual_embeds": levels}
    cache = DynamicCache(config=model.config.get_text_config())
    hidden = core.language_model(
        inputs_embeds=embeds[:, kept], position_ids=positions[:, :, kept], **{hf.cache_argument(core.language_model): cache}, use_cache=True, **extra
    ).last_hidden_state
    next_position = int(positions.max()) + 1
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    tokens: list[int] = []
    for step in range(max_new_tokens):
        token = int(model.lm_head(hidden[:, -1]).argmax(-1))
        tokens.append(token)
        if token in eos or step == max_new_tokens - 1:
            break
        step_positions = torch.full((3, 1, 1), next_position + step, dtype=torch.long)
        hidden = core.language_model(
            inputs_embeds=core.get_input_embeddings()(torch.tensor([[token]])),
            position_ids=step_positions,
            **{hf.cache_argument(core.language_model): cache},
            use_cache=True,
        ).last_hidden_state
    return tokens
