"""Qwen3.5 specifics: linear-attention (recurrent) layers. Input-level pruning is exact as is (see
``test_adapters_families.py``); reusing a prefix cache needs a snapshot of the recurrent state,
because such a cache cannot be cropped back to a shorter prefix."""

from __future__ import annotations

import pytest
import torch

from fluxmem.adapters import hf, registry
from fluxmem.adapters.pruning import prune_prefill
from fluxmem.memory import FluxMemConfig
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import build_tiny, video_inputs

CONFIG = FluxMemConfig(short_frames=4, medium_frames=8)


@pytest.fixture(scope="module")
def pruned_prompt():
    """The tiny Qwen3.5, its adapter, and a pruned prompt split after the video."""
    model, processor = build_tiny("qwen3_5")
    adapter = registry.adapter_for(model)
    frames = torch.from_numpy(moving_square_frames(16)).permute(0, 3, 1, 2).contiguous()
    inputs = video_inputs(processor, frames)
    with torch.no_grad():
        prepared = adapter.prepare(**inputs)
    pruned = prune_prefill(
        adapter, prepared, inputs["input_ids"], inputs["attention_mask"], inputs["video_grid_thw"], CONFIG
    )
    kept_ids = inputs["input_ids"][0, pruned.kept_index[0]]
    split = int((kept_ids == model.config.video_token_id).nonzero().max()) + 2  # after the last <|vision_end|>
    return model, adapter, pruned.inputs_embeds, pruned.position_ids, split


def _run(model, embeds, positions, cache):
    with torch.no_grad():
        hidden = model.model.language_model(
            inputs_embeds=embeds,
            position_ids=positions,
            **{hf.cache_argument(model.model.language_model): cache},
            use_cache=True,
        ).last_hidden_state
    return model.lm_head(hidden[:, -1])


def test_only_qwen3_5_families_have_recurrent_state(pruned_prompt):
    model = pruned_prompt[0]
    types = model.config.text_config.layer_types
    assert types.count("linear_attention") == 3 and types.count("full_attention") == 1
    for family, expected in (("qwen3_5", True), ("qwen3_5_moe", True), ("qwen3_vl", False), ("qwen2_vl", False)):
        model, _ = build_tiny(family)
        assert hf.has_recurrent_state(model) is expected, family


def test_a_recurrent_cache_cannot_be_cropped_back(pruned_prompt):
    model, _, embeds, positions, split = pruned_prompt
    cache = hf.new_cache(model)
    _run(model, embeds, positions, cache)
    assert cache.get_seq_length() == embeds.shape[1]
    with pytest.raises(RuntimeError, match="past states"):
        cache.crop(split - embeds.shape[1])  # remove everything after the video


def test_snapshot_of_the_prefix_serves_several_questions_exactly(pruned_prompt):
    model, _, embeds, positions, split = pruned_prompt
    head, head_positions = embeds[:, :split], positions[:, :, :split]
    questions = [
        (embeds[:, split:], positions[:, :, split:]),
        (embeds[:, split:].flip(1), positions[:, :, split:]),  # another "question" of the same length
        (embeds[:, split + 3 :], positions[:, :, split + 3 :]),
    ]
    prefix = hf.new_cache(model)
    _run(model, head, head_positions, prefix)
    snapshot = hf.snapshot(prefix)
    for tail, tail_positions in questions:
        full = _run(
            model, torch.cat([head, tail], 1), torch.cat([head_positions, tail_positions], 2), hf.new_cache(model)
        )
        reused = _run(model, tail, tail_positions, prefix)
        hf.restore(prefix, snapshot)
        assert hf.cache_length(prefix) == split
        # the cached prefix and the full sequence run through matrix products of other shapes (and the
        # linear-attention scan in other chunks): equal up to float rounding, the same argmax exactly
        torch.testing.assert_close(reused, full, rtol=1e-4, atol=1e-4)
        assert int(reused.argmax()) == int(full.argmax())
    # a session that crops the key/value layers back after a question (the Qwen2.5-VL way) answers
    # the next one wrongly: the recurrent state still holds the previous question
    tail, tail_positions = questions[0]
    cropped = prefix
    _run(model, questions[1][0], questions[1][1], cropped)
    hf.crop(cropped, split)  # key/value layers only: the recurrent state is not restored
    assert cropped.get_seq_length() == split
    full = _run(model, torch.cat([head, tail], 1), torch.cat([head_positions, tail_positions], 2), hf.new_cache(model))
    assert (_run(model, tail, tail_positions, cropped) - full).abs().max() > 1e-3
