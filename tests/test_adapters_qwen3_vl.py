"""Qwen3-VL specifics: several vision blocks per video treated as one stream, deepstack features
pruned (and merged) at the same positions as their tokens, batches and beam expansion."""

from __future__ import annotations

import pytest
import torch

from fluxmem.adapters import detach, get_state, install, registry
from fluxmem.adapters.pruning import prune_prefill
from fluxmem.memory import merge_full
from fluxmem.errors import InputError
from fluxmem.memory import FluxMemConfig, compress
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import (
    _merge_reference,
    build_tiny,
    reference_pruned_greedy,
    video_inputs,
)

CONFIG = FluxMemConfig(short_frames=4, medium_frames=8)


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny("qwen3_vl")
    install(model, CONFIG, default_active=True)
    yield model, processor
    detach(model)


def _frames(count: int, seed: int = 0, square: int = 56) -> torch.Tensor:
    """A 2x2-cell square moving one cell per frame: SDC merges some long-term cells of the tiny model."""
    frames = moving_square_frames(count, seed=seed, square=square)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def test_blocks_of_one_video_form_one_stream(tiny):
    model, processor = tiny
    inputs = video_inputs(processor, _frames(8), fps=2.0)
    ids = inputs["input_ids"][0]
    tokenizer = processor.tokenizer
    text = tokenizer.decode(ids)
    # 8 frames at 2 fps = 4 grid steps, each announced by its mean timestamp and in its own block
    for stamp in ("<0.2 seconds>", "<1.2 seconds>", "<2.2 seconds>", "<3.2 seconds>"):
        assert stamp in text
    is_video = (ids == model.config.video_token_id).int()
    blocks = int(((is_video[1:] - is_video[:-1]) == 1).sum())
    assert blocks == 4
    adapter = registry.adapter_for(model)
    spans = adapter.video_spans(inputs["input_ids"], inputs["video_grid_thw"])
    assert len(spans) == 1 and spans[0].grid_thw == (4, 4, 4)
    assert torch.equal(spans[0].positions, is_video.nonzero().squeeze(1))
    gaps = spans[0].positions.diff()
    assert int((gaps > 1).sum()) == 3  # the timestamp text between blocks is not part of the video


def test_pruning_runs_the_memory_over_the_whole_video(tiny):
    model, processor = tiny
    inputs = video_inputs(processor, _frames(16))
    adapter = registry.adapter_for(model)
    with torch.no_grad():
        prepared = adapter.prepare(**inputs)
    pruned = prune_prefill(adapter, prepared, inputs["input_ids"], inputs["attention_mask"], inputs["video_grid_thw"], CONFIG)
    expected = compress(prepared.video_features, (8, 4, 4), CONFIG, temporal_patch_size=2)
    (span, result), = pruned.results
    assert torch.equal(result.keep, expected.keep)
    assert [f.tier for f in result.frames] == ["long"] * 2 + ["mid"] * 4 + ["short"] * 2
    kept_video = pruned.kept_index[0][torch.isin(pruned.kept_index[0], span.positions)]
    assert torch.equal(kept_video, span.positions[expected.keep])


def test_deepstack_is_pruned_and_merged_like_the_tokens(tiny):
    model, processor = tiny
    inputs = video_inputs(processor, _frames(16))
    adapter = registry.adapter_for(model)
    with torch.no_grad():
        prepared = adapter.prepare(**inputs)
    pruned = prune_prefill(adapter, prepared, inputs["input_ids"], inputs["attention_mask"], inputs["video_grid_thw"], CONFIG)
    (_, result), = pruned.results
    assert any(r.anchors is not None and bool(r.anchors.any()) for r in result.frames)  # merges happened
    # the helper applied to the tokens themselves reproduces the memory's merged features
    assert torch.equal(merge_full(result, prepared.video_features), result.features)
    levels = adapter.video_deepstack(prepared)
    assert len(levels) == len(model.config.vision_config.deepstack_visual_indexes) == 2
    for level, kept in zip(levels, adapter.pruned_deepstack(prepared, pruned)):
        reference = _merge_reference(level, result)[result.keep]
        assert torch.equal(kept, reference)
        assert not torch.equal(kept, level[result.keep])  # merging changed the anchors' features
    extras = adapter.pruned_extras(prepared, pruned)
    video_output = extras["mm_encoder_outputs"]["video"]
    assert video_output.pooler_output[0].shape[0] == result.kept_tokens == video_output.deepstack_features[0][0].shape[0]


def test_generation_needs_the_pruned_deepstack(tiny):
    model, processor = tiny
    inputs = video_inputs(processor, _frames(16))
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert tokens == reference_pruned_greedy(model, inputs, CONFIG, 6)
    assert tokens != reference_pruned_greedy(model, inputs, CONFIG, 6, deepstack=False)


def test_batch_with_padding_equals_each_sample_alone(tiny):
    model, processor = tiny
    long_inputs = video_inputs(processor, _frames(16))
    short_inputs = video_inputs(processor, _frames(8, seed=3), question="What color is the square?")
    alone = []
    for inputs in (long_inputs, short_inputs):
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        alone.append(out[0, inputs["input_ids"].shape[1] :].tolist())
    messages = lambda q: [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": q}]}]
    texts = [
        processor.apply_chat_template(messages(q), tokenize=False, add_generation_prompt=True)
        for q in ("What is moving in the video?", "What color is the square?")
    ]
    metadata = [{"total_num_frames": n, "fps": 2.0, "frames_indices": list(range(n))} for n in (16, 8)]
    batch = processor(
        text=texts, videos=[_frames(16), _frames(8, seed=3)], padding=True, return_tensors="pt",
        do_sample_frames=False, video_metadata=metadata,
    )  # fmt: skip
    assert not bool(batch["attention_mask"].all())  # really padded
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    width = batch["input_ids"].shape[1]
    for row, expected in enumerate(alone):
        got = [t for t in out[row, width:].tolist() if t != processor.tokenizer.pad_token_id]
        assert got == expected[: len(got)] and len(got) == len(expected)
    assert [r.tokens for r in get_state(model).last_reports] == [128, 64]


def test_beam_expansion_splits_grids_by_video_not_by_block(tiny):
    model, processor = tiny
    inputs = video_inputs(processor, _frames(16))
    best = model.generate(**inputs, max_new_tokens=4, num_beams=2, do_sample=False)
    both = model.generate(**inputs, max_new_tokens=4, num_beams=2, num_return_sequences=2, do_sample=False)
    reports = get_state(model).last_reports
    assert [r.tokens for r in reports] == [128, 128] and reports[0].kept == reports[1].kept
    assert torch.equal(both[0], best[0])


def test_encoder_output_without_deepstack_is_rejected(tiny):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, processor = tiny
    inputs = video_inputs(processor, _frames(8))
    adapter = registry.adapter_for(model)
    features = adapter.encode_video(inputs.pop("pixel_values_videos"), inputs["video_grid_thw"])
    with pytest.raises(InputError, match="deepstack_features"):
        adapter.prepare(**inputs, mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(features,))})


def test_moe_variant_prunes_deepstack_too():
    model, processor = build_tiny("qwen3_vl_moe")
    install(model, CONFIG, default_active=True)
    inputs = video_inputs(processor, _frames(16))
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    assert tokens == reference_pruned_greedy(model, inputs, CONFIG, 6)
    assert tokens != reference_pruned_greedy(model, inputs, CONFIG, 6, deepstack=False)
