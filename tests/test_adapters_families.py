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

from fluxmem.adapters import attach, detach, get_state, registry
from fluxmem.memory import FluxMemConfig
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import FAMILIES, build_tiny, reference_pruned_greedy, video_inputs

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
    attach(model, CONFIG, active=False)
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
        first = lambda use: model.generate(  # noqa: E731
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
