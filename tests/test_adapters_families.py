"""Every Qwen vision-language family besides Qwen2.5-VL, on tiny random models built offline.

Per family: the adapter resolves and reads its numbers from the config; generation with FluxMem
off equals the stock model; with pruning, greedy output equals the stock LANGUAGE MODEL run by hand
on the kept tokens at their original positions (``testing_families.reference_pruned_greedy``,
independent of the adapter code); step-wise video encoding equals whole-video encoding where the
adapter claims it; saved models load through ``fluxmem.loading.load_model``.
"""

from __future__ import annotations

import pytest
import torch

from fluxmem.adapters import detach, get_state, install, registry
from fluxmem.memory import FluxMemConfig
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import (
    FAMILIES,
    build_tiny,
    reference_pruned_greedy,
    video_inputs,
)

CONFIG = FluxMemConfig(short_frames=4, medium_frames=8)
NEW_TOKENS = 6
EXPECTED = {
    "qwen2_vl": "Qwen2VLAdapter",
    "qwen3_vl": "Qwen3VLAdapter",
    "qwen3_vl_moe": "Qwen3VLMoeAdapter",
    "qwen3_5": "Qwen3_5Adapter",
    "qwen3_5_moe": "Qwen3_5MoeAdapter",
}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny(family)
        return cache[family]

    return get


@pytest.fixture(scope="module")
def frames16():
    # a 2x2-cell square: SDC merges some long-term cells, so merged anchors are covered too
    return torch.from_numpy(moving_square_frames(16, square=56)).permute(0, 3, 1, 2).contiguous()


def _new_tokens(model, inputs, **kwargs) -> list[int]:
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_resolves_and_reads_the_config(built, family):
    model, _ = built(family)
    adapter = registry.adapter_for(model)
    assert type(adapter).__name__ == EXPECTED[family]
    vision = model.config.vision_config
    assert adapter.temporal_patch_size == vision.temporal_patch_size == 2
    assert adapter.spatial_merge_size == vision.spatial_merge_size == 2
    assert adapter.video_token_id == model.config.video_token_id
    assert adapter.family in registry.supported_families()


@pytest.mark.parametrize("family", FAMILIES)
def test_switch_off_equals_stock_and_pruned_equals_language_model_by_hand(built, frames16, family):
    model, processor = built(family)
    inputs = video_inputs(processor, frames16)
    stock = _new_tokens(model, inputs)
    assert stock == reference_pruned_greedy(model, inputs, None, NEW_TOKENS)  # the reference is sound
    # transformers' positions, as the reference's (Qwen2-VL's original rule: test_positions.py)
    install(model, CONFIG, default_active=False, positions="transformers")
    try:
        assert _new_tokens(model, inputs) == stock
        assert _new_tokens(model, inputs, use_fluxmem=False) == stock
        pruned = _new_tokens(model, inputs, use_fluxmem=True)
        summary = get_state(model).summary()
        # 16 frames = 8 grid steps of 4x4 cells; every tier populated, long-term frames merged
        assert summary["tokens"] == 128 and summary["videos"] == 1
        assert summary["tiers"]["long"]["frames"] == 2 and summary["kept"] < 80
        assert pruned == reference_pruned_greedy(model, inputs, CONFIG, NEW_TOKENS)
        # the pruning changed what the model saw: its first-step logits differ from the stock ones
        first = lambda use: model.generate(
            **inputs, max_new_tokens=1, do_sample=False, use_fluxmem=use, output_logits=True, return_dict_in_generate=True
        ).logits[0]
        assert (first(True) - first(False)).abs().max() > 1e-3
    finally:
        detach(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_stepwise_encoding_equals_whole_video_encoding(built, frames16, family):
    model, processor = built(family)
    adapter = registry.adapter_for(model)
    assert adapter.steps_are_independent
    inputs = video_inputs(processor, frames16[:8])
    pixels, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    with torch.no_grad():
        whole = adapter.encode_video_output(pixels, grid)
        stepwise = adapter.encode_videos_stepwise(pixels, grid, chunk_steps=1)
    assert torch.equal(torch.cat(whole.pooler_output), torch.cat(stepwise.pooler_output))
    levels = getattr(whole, "deepstack_features", None)
    assert bool(levels) == family.startswith("qwen3_vl")
    for full, steps in zip(levels or [], getattr(stepwise, "deepstack_features", None) or []):
        assert torch.equal(torch.cat(full), torch.cat(steps))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5"])
def test_saved_model_loads_with_the_switch(tmp_path, frames16, family):
    from fluxmem.loading import load_model

    model, processor = build_tiny(family, save_dir=tmp_path)
    inputs = video_inputs(processor, frames16)
    expected = reference_pruned_greedy(model, inputs, CONFIG, NEW_TOKENS)
    loaded, loaded_processor = load_model(tmp_path, device="cpu", dtype="float32", fluxmem=CONFIG)
    assert type(loaded) is type(model)
    assert type(loaded_processor) is type(processor)
    assert _new_tokens(loaded, video_inputs(loaded_processor, frames16)) == expected


def _frames(count: int, seed: int = 0, **kwargs) -> torch.Tensor:
    return torch.from_numpy(moving_square_frames(count, seed=seed, **kwargs)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_of_two_prompts_equals_each_prompt_alone(built, family):
    """use_fluxmem=True on a left-padded batch of two different prompts (videos of different
    lengths, different questions) gives each prompt exactly its answer alone."""
    model, processor = built(family)
    install(model, CONFIG, default_active=True)
    try:
        clips = [_frames(16, seed=1), _frames(8, seed=2)]
        questions = ["What is moving in the video?", "Describe the colours of the square, please."]
        alone = [_new_tokens(model, video_inputs(processor, clip, q)) for clip, q in zip(clips, questions)]
        messages = [
            [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": q}]}] for q in questions
        ]
        texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        metadata = [{"total_num_frames": len(c), "fps": 2.0, "frames_indices": list(range(len(c))), "duration": len(c) / 2.0}
                    for c in clips]  # fmt: skip
        processor.tokenizer.padding_side = "left"
        batch = processor(text=texts, videos=clips, padding=True, return_tensors="pt", do_sample_frames=False,
                          video_metadata=metadata)  # fmt: skip
        assert not bool(batch["attention_mask"][:, 0].all()) and bool(batch["attention_mask"][:, -1].all())  # left
        reports = []
        out = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, fluxmem_stats=reports.append)
        width = batch["input_ids"].shape[1]
        for row, expected in enumerate(alone):
            got = out[row, width:].tolist()
            got = got[: len(expected)] if len(expected) < NEW_TOKENS else got  # a row may stop at EOS earlier
            assert got == expected, (family, row)
        assert [r.batch_index for r in reports[0].videos] == [0, 1]
        assert all(r.kept < r.tokens for r in reports[0].videos[:1])  # the 16-frame video really was pruned
    finally:
        detach(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_ask_through_inference_answer_reports_the_memory(built, family):
    """``inference.answer`` (what ``fluxmem ask`` runs: step-wise encoding handed to generate) equals
    generate on the same inputs, and its memory line belongs to the call (not zeroed by decoding)."""
    from fluxmem.inference import SamplingOptions, answer, build_inputs, build_messages

    model, processor = built(family)
    install(model, CONFIG, default_active=True)
    try:
        frames = moving_square_frames(16, square=56)
        sampling = SamplingOptions(fps=2.0)
        got = answer(model, processor, frames, "What is moving?", sampling=sampling, max_new_tokens=NEW_TOKENS)
        inputs = build_inputs(processor, build_messages(frames, "What is moving?", sampling))
        with torch.inference_mode():
            assert got.token_ids == _new_tokens(model, inputs)
        assert got.memory["videos"] == 1 and 0 < got.memory["kept"] < got.memory["tokens"]
        assert got.memory["tokens"] == int(inputs["video_grid_thw"].prod()) // 4
    finally:
        detach(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_step_with_the_memory_in_the_forward(family):
    """One forward/backward with labels: with nothing to prune the loss equals the stock model's; with
    pruning the loss is computed on the kept sequence (text labels all kept) and gradients reach the
    vision tower through the kept tokens."""
    model, processor = build_tiny(family)
    inputs = video_inputs(processor, torch.from_numpy(moving_square_frames(8, square=56)).permute(0, 3, 1, 2).contiguous())
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.video_token_id, -100)
    model.train()
    stock = model(**inputs, labels=labels).loss
    install(model, FluxMemConfig(short_frames=2, medium_frames=2), default_active=True)
    try:
        whole = model(**inputs, labels=labels, short_frames=8).loss  # every frame short-term: nothing pruned
        assert torch.equal(whole, stock)
        reports = []
        model.zero_grad()
        loss = model(**inputs, labels=labels, fluxmem_stats=reports.append).loss
        loss.backward()
        assert torch.isfinite(loss) and not torch.equal(loss, stock)
        assert reports[0].videos[0].kept < reports[0].videos[0].tokens
        visual = [p.grad for p in model.model.visual.parameters() if p.grad is not None]
        assert visual and any(bool(g.abs().sum() > 0) for g in visual)
    finally:
        detach(model)
        model.eval()
