"""The drop-in switch on the official Qwen2.5-VL: identical when off, exact when on."""

import pytest
import torch
import transformers
from conftest import video_tensor
from transformers import DynamicCache

import fluxmem
from fluxmem import ConfigError, FluxMemConfig, UnsupportedModelError, compress
from fluxmem.adapters import hf, registry
from fluxmem.memory import LONG, MID
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames, square_cells

MAX_NEW = 10


@pytest.fixture(scope="module")
def stock():
    model, processor = build_tiny_qwen2_5_vl(seed=0)
    return model, processor


@pytest.fixture(scope="module")
def ours():
    model, processor = build_tiny_qwen2_5_vl(seed=0, model_class=fluxmem.Qwen2_5_VLForConditionalGeneration)
    return model, processor


def _inputs(processor, videos, question="What is moving?", images=None, fps=2.0):
    """Processor inputs for one prompt per entry of ``videos`` (a list of frame lists per prompt)."""
    texts, flat_videos = [], []
    for prompt_videos, q in zip(videos, question if isinstance(question, list) else [question] * len(videos)):
        content = [{"type": "video", "video": "v"} for _ in prompt_videos]
        if images:
            content = [{"type": "image", "image": "i"}] + content
        content.append({"type": "text", "text": q})
        texts.append(
            processor.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
        flat_videos += [video_tensor(v) for v in prompt_videos]
    kwargs = {"text": texts, "videos": flat_videos, "padding": True, "return_tensors": "pt", "do_sample_frames": False, "fps": fps}
    if images:
        kwargs["images"] = images
    return processor(**kwargs)


def _generate(model, inputs, **kwargs):
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, **kwargs)
    return out[:, inputs["input_ids"].shape[1] :]


def _clip(frames=16, seed=0):
    return moving_square_frames(frames, height=112, width=224, step=56, seed=seed)


# --------------------------------------------------------------------------- identical when off
def test_weights_and_outputs_without_fluxmem_equal_the_stock_model(stock, ours):
    inputs = _inputs(stock[1], [[_clip()]])
    reference = _generate(stock[0], inputs)
    assert torch.equal(_generate(ours[0], inputs), reference)
    assert torch.equal(_generate(ours[0], inputs, use_fluxmem=False), reference)


def test_short_frames_covering_the_video_is_identical_to_stock(stock, ours):
    inputs = _inputs(stock[1], [[_clip(16)]])
    reference = _generate(stock[0], inputs)
    assert torch.equal(_generate(ours[0], inputs, use_fluxmem=True, short_frames=16, medium_frames=64), reference)
    with torch.inference_mode():
        logits_stock = stock[0](**inputs).logits
        logits_ours = ours[0](**inputs, use_fluxmem=True, short_frames=16).logits
    assert torch.equal(logits_ours, logits_stock)


# ------------------------------------------------------------------------ exact when pruning
def _reference_prune_and_decode(model, inputs, config, steps=MAX_NEW):
    """The stock language model run by hand on the kept embeddings at their original positions."""
    core = model.model
    input_ids = inputs["input_ids"]
    embeds = core.get_input_embeddings()(input_ids)
    features = torch.cat(core.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)
    mask = input_ids[0] == model.config.video_token_id
    embeds[0, mask] = features
    positions, _deltas = core.get_rope_index(
        input_ids,
        mm_token_type_ids=inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )
    t, h, w = inputs["video_grid_thw"][0].tolist()
    result = compress(features, (t, h // 2, w // 2), config)
    keep = torch.ones(input_ids.shape[1], dtype=torch.bool)
    keep[mask] = result.keep
    embeds[0, mask] = result.features
    kept_embeds, kept_positions = embeds[:, keep], positions[:, :, keep]
    cache = DynamicCache(config=model.config.get_text_config())
    out = core.language_model(
        inputs_embeds=kept_embeds, position_ids=kept_positions, **{hf.cache_argument(core.language_model): cache}
    )
    tokens = []
    next_position = int(positions.max()) + 1
    for step in range(steps):
        token = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        tokens.append(int(token))
        position = torch.full((3, 1, 1), next_position + step)
        out = core.language_model(
            inputs_embeds=core.get_input_embeddings()(token[:, None]),
            position_ids=position,
            **{hf.cache_argument(core.language_model): cache},
        )
    return tokens, int(keep.sum())


@pytest.mark.parametrize("short_frames,medium_frames", [(4, 4), (2, 8), (6, 0)])
def test_pruned_generation_equals_stock_language_model_on_kept_tokens(ours, short_frames, medium_frames):
    model, processor = ours
    inputs = _inputs(processor, [[_clip(16)]])
    config = FluxMemConfig(short_frames=short_frames, medium_frames=medium_frames)
    expected, kept_length = _reference_prune_and_decode(model, inputs, config)

    prefill_lengths = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: prefill_lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        got = _generate(model, inputs, use_fluxmem=True, short_frames=short_frames, medium_frames=medium_frames)
    finally:
        hook.remove()
    assert got[0].tolist() == expected
    assert prefill_lengths[0] == kept_length < inputs["input_ids"].shape[1]
    summary = fluxmem.get_state(model).summary()
    text_tokens = inputs["input_ids"].shape[1] - summary["tokens"]
    assert prefill_lengths[0] == text_tokens + summary["kept"]


def test_enable_on_a_plain_transformers_model_touches_nothing_else():
    model_a, processor = build_tiny_qwen2_5_vl(seed=0)
    model_b, _ = build_tiny_qwen2_5_vl(seed=0)
    inputs = _inputs(processor, [[_clip(16)]])
    before = _generate(model_b, inputs)
    fluxmem.enable(model_a, short_frames=4, medium_frames=4)
    assert fluxmem.get_state(model_b) is None
    assert type(model_a).forward is transformers.Qwen2_5_VLForConditionalGeneration.forward
    assert torch.equal(_generate(model_b, inputs), before)
    with pytest.raises(ValueError, match="use_fluxmem"):  # the stock model still rejects our options
        _generate(model_b, inputs, use_fluxmem=True)
    pruned = _generate(model_a, inputs)
    assert fluxmem.get_state(model_a).summary()["kept"] < fluxmem.get_state(model_a).summary()["tokens"]
    assert torch.equal(_generate(model_a, inputs, use_fluxmem=False), before)
    fluxmem.disable(model_a)
    assert torch.equal(_generate(model_a, inputs), before)
    assert pruned.shape == before.shape


def test_batch_with_left_padding_gives_each_prompt_its_own_answer(ours):
    model, processor = ours
    first, second = [_clip(16, seed=1)], [_clip(12, seed=2)]
    questions = ["What is moving?", "Describe the video in a long sentence please."]
    options = {"use_fluxmem": True, "short_frames": 4, "medium_frames": 4}
    alone = [_generate(model, _inputs(processor, [v], q), **options)[0] for v, q in zip([first, second], questions)]
    batch_inputs = _inputs(processor, [first, second], questions)
    assert (batch_inputs["attention_mask"] == 0).any()  # really padded
    together = _generate(model, batch_inputs, **options)
    assert torch.equal(together[0], alone[0])
    assert torch.equal(together[1], alone[1])


def test_several_videos_are_compressed_each_on_its_own_and_images_stay(ours):
    model, processor = ours
    clips = [_clip(16, seed=3), _clip(8, seed=4)]
    image = moving_square_frames(1, height=56, width=56, square=28)[0]
    inputs = _inputs(processor, [clips], images=[image])
    _generate(model, inputs, use_fluxmem=True, short_frames=4, medium_frames=2)
    reports = fluxmem.get_state(model).last_reports
    assert len(reports) == 2
    core = model.model
    features = torch.cat(core.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)
    offset = 0
    for report, grid in zip(reports, inputs["video_grid_thw"].tolist()):
        merged = (grid[0], grid[1] // 2, grid[2] // 2)
        size = merged[0] * merged[1] * merged[2]
        alone = compress(features[offset : offset + size], merged, FluxMemConfig(short_frames=4, medium_frames=2))
        offset += size
        assert report.kept == alone.kept_tokens and report.tokens == size

    # image tokens all reach the language model: count them in the pruned prefill
    seen = {}

    def capture(module, args, kwargs):
        seen.setdefault("embeds", kwargs["inputs_embeds"])

    hook = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.inference_mode():
            model(**inputs, use_fluxmem=True, short_frames=4, medium_frames=2)
    finally:
        hook.remove()
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    kept_videos = sum(r.kept for r in fluxmem.get_state(model).last_reports)
    text_and_image = inputs["input_ids"].shape[1] - sum(r.tokens for r in reports)
    assert image_tokens > 0
    assert seen["embeds"].shape[1] == text_and_image + kept_videos


def test_known_answer_on_the_square_clip(ours):
    """Static cells dropped in mid- and long-term, the square's cells kept (through the real
    vision tower: same pixels give the same features)."""
    model, processor = ours
    frames = _clip(16)
    _generate(model, _inputs(processor, [[frames]]), use_fluxmem=True, short_frames=4, medium_frames=4)
    records = fluxmem.get_state(model).last_reports[0].frames
    covered = square_cells(16, height=112, width=224, step=56)
    everything = {(h, w) for h in range(4) for w in range(8)}
    checked = 0
    for record in records:
        if record.tier not in (MID, LONG):
            continue
        step = record.index
        kept = {(int(c) // 8, int(c) % 8) for c in record.keep.nonzero().squeeze(1)}
        around = set().union(*covered[max(0, 2 * step - 2) : 2 * step + 4])
        assert not kept & (everything - around), f"static cells kept in {record.tier} step {step}"
        assert kept & (covered[2 * step] | covered[2 * step + 1]), f"square lost in step {step}"
        checked += 1
    assert checked == 6


def test_grid_steps_sharing_a_temporal_position_stay_separate(ours):
    """At high fps two grid steps share one temporal M-RoPE id; frames are still told apart."""
    model, processor = ours
    inputs = _inputs(processor, [[_clip(16)]], fps=30.0)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )
    video = inputs["input_ids"][0] == model.config.video_token_id
    temporal_ids = positions[0, 0, video].reshape(8, -1)[:, 0]
    assert len(set(temporal_ids.tolist())) < 8  # ids collide
    _generate(model, inputs, use_fluxmem=True, short_frames=4, medium_frames=4)
    assert len(fluxmem.get_state(model).last_reports[0].frames) == 8


# ----------------------------------------------------------------------------------- training
def test_labels_follow_the_kept_tokens(ours):
    model, processor = ours
    inputs = _inputs(processor, [[_clip(16)]])
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.video_token_id] = -100
    answer_tokens = int((labels != -100).sum())
    captured = {}

    def capture(module, args, kwargs, output):
        captured.setdefault("kwargs", kwargs)

    hook = model.register_forward_hook(capture, with_kwargs=True)
    try:
        out = model(**inputs, labels=labels, use_fluxmem=True, short_frames=4, medium_frames=4)
    finally:
        hook.remove()
    pruned_labels = captured["kwargs"]["labels"]
    assert pruned_labels.shape[1] < labels.shape[1]
    assert int((pruned_labels != -100).sum()) == answer_tokens  # every labelled token kept its label
    assert torch.equal(pruned_labels[pruned_labels != -100], labels[labels != -100])
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), pruned_labels[0, 1:], ignore_index=-100)
    assert torch.equal(out.loss, expected)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------ attention backends
def test_eager_and_sdpa_agree(ours):
    eager, processor = build_tiny_qwen2_5_vl(
        seed=0, attn_implementation="eager", model_class=fluxmem.Qwen2_5_VLForConditionalGeneration
    )
    inputs = _inputs(processor, [[_clip(16)]])
    options = {"use_fluxmem": True, "short_frames": 4, "medium_frames": 4}
    assert torch.equal(_generate(eager, inputs, **options), _generate(ours[0], inputs, **options))


# ---------------------------------------------------------------------------------- bad input
def test_text_only_prompt_with_fluxmem_runs_unpruned(stock, ours):
    processor = stock[1]
    text = processor.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[text], return_tensors="pt")
    assert torch.equal(_generate(ours[0], inputs, use_fluxmem=True), _generate(stock[0], inputs))


def test_nonsense_options_are_clear_errors(ours):
    model, processor = ours
    inputs = _inputs(processor, [[_clip(8)]])
    with pytest.raises(ConfigError, match="short_frames=1 is less than one temporal grid step"):
        _generate(model, inputs, use_fluxmem=True, short_frames=1)
    with pytest.raises(ConfigError, match="medium_frames must be >= 0"):
        _generate(model, inputs, use_fluxmem=True, medium_frames=-2)
    with pytest.raises(ConfigError, match="short_frames=1"):
        fluxmem.enable(model, short_frames=1)


def test_unsupported_model_is_a_clear_error():
    config = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    llama = transformers.LlamaForCausalLM(config)
    with pytest.raises(UnsupportedModelError, match="Supported: .*Qwen2.5-VL"):
        fluxmem.enable(llama)
    with pytest.raises(UnsupportedModelError):
        registry.adapter_for(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------ loading
def test_loading_from_a_saved_directory(tiny_model_dir):
    from fluxmem.loading import load_model

    saved, _ = build_tiny_qwen2_5_vl(seed=0)  # what tiny_model_dir holds
    model = fluxmem.Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    assert type(model) is transformers.Qwen2_5_VLForConditionalGeneration
    assert isinstance(model, fluxmem.Qwen2_5_VLForConditionalGeneration)
    assert fluxmem.get_state(model).default_active is False
    expected = saved.state_dict()
    loaded = model.state_dict()
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[key], loaded[key]) for key in expected), "weights not loaded"
    loaded, _processor = load_model(tiny_model_dir, device="cpu", fluxmem=FluxMemConfig(short_frames=4))
    assert all(torch.equal(expected[key], value) for key, value in loaded.state_dict().items())
    assert fluxmem.get_state(loaded).default_active is True
    assert fluxmem.get_state(loaded).config.short_frames == 4
    with pytest.raises(fluxmem.FluxMemError, match="does not exist"):
        load_model(tiny_model_dir / "missing" / "nested")


# ------------------------------------------------------------------------- one way to switch on
def test_enabled_context_manager_switches_on_for_the_block_only():
    model, processor = build_tiny_qwen2_5_vl(seed=0)
    inputs = _inputs(processor, [[_clip(16)]])
    before = _generate(model, inputs)
    reports = []
    with fluxmem.enabled(model, short_frames=4, medium_frames=4) as switched:
        assert switched is model
        inside = _generate(model, inputs, fluxmem_stats=reports.append)
    assert fluxmem.get_state(model) is None and "generate" not in model.__dict__
    assert torch.equal(_generate(model, inputs), before)
    assert len(reports) == 1 and reports[0].summary()["kept"] < reports[0].summary()["tokens"]
    assert inside.shape == before.shape
    # inside an enable()d model the block changes the settings and puts them back afterwards
    fluxmem.enable(model, short_frames=8)
    with fluxmem.enabled(model, short_frames=4, medium_frames=4):
        assert fluxmem.get_state(model).config.short_frames == 4
    assert fluxmem.get_state(model).config.short_frames == 8 and fluxmem.get_state(model).default_active


def test_statistics_belong_to_the_call_that_produced_them(ours):
    import threading

    model, processor = ours
    long_inputs, short_inputs = _inputs(processor, [[_clip(16, seed=5)]]), _inputs(processor, [[_clip(8, seed=6)]])
    options = {"use_fluxmem": True, "short_frames": 2, "medium_frames": 2}
    got: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def run(name, inputs):
        barrier.wait()
        _generate(model, inputs, fluxmem_stats=lambda report: got.setdefault(name, report), **options)
        got[name + "_last"] = fluxmem.get_state(model).last_report  # this thread's last call

    threads = [threading.Thread(target=run, args=(n, i)) for n, i in (("long", long_inputs), ("short", short_inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got["long"].summary()["tokens"] == int(long_inputs["video_grid_thw"].prod()) // 4  # 2x2 merge
    assert got["short"].summary()["tokens"] == int(short_inputs["video_grid_thw"].prod()) // 4
    assert got["long"].summary()["tokens"] == 2 * got["short"].summary()["tokens"]
    assert got["long_last"] is got["long"] and got["short_last"] is got["short"]
    # decoding steps do not wipe the prefill's statistics; a text-only call reports FluxMem off
    text = processor(text=["hello"], return_tensors="pt")
    off = []
    _generate(model, text, fluxmem_stats=off.append, use_fluxmem=True)
    assert off[0].active is False and off[0].summary()["tokens"] == 0


@pytest.mark.parametrize("name,model_type", sorted(fluxmem.models.DROP_IN.items()))
def test_drop_in_name_for_every_family(name, model_type):
    from fluxmem.testing_families import tiny_family_config

    drop_in = getattr(fluxmem, name)
    official = getattr(transformers, name)
    if model_type == "qwen2_5_vl":
        from fluxmem.testing import tiny_qwen2_5_vl_config

        config = tiny_qwen2_5_vl_config()
    else:
        config = tiny_family_config(model_type)
    model = drop_in(config)
    assert type(model) is official and isinstance(model, drop_in)
    assert fluxmem.get_state(model).default_active is False
    assert not isinstance(official(config), drop_in)  # a model without the switch is not one
