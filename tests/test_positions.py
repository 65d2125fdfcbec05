"""M-RoPE positions of Qwen2-VL and Qwen2.5-VL: the original rule by default, transformers' on request.

The original rule (the one the models were trained with) is written out by hand in
``tests/_positions.py``; the library must equal it exactly in every path that numbers positions
(generate and forward with the memory off and on, left-padded batches, several videos and an image
in one prompt, training, the streaming session), and the stock language model run by hand on those
positions must give the library's greedy tokens. ``positions="transformers"`` must equal stock
``generate`` bit for bit. The clips here have more grid steps than merged rows or columns, so the
two rules differ (checked in each test that relies on it).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _positions import as_tensor, original_positions

import fluxmem
from fluxmem import ConfigError, FluxMemConfig, UnsupportedTransformersError
from fluxmem.adapters import detach, get_state, hf, install, registry
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames
from fluxmem.testing_families import build_tiny, reference_pruned_greedy, video_inputs

FAMILIES = ("qwen2_vl", "qwen2_5_vl")
NEW_TOKENS = 8
# memory off; nothing pruned (every frame short-term); pruned to every tier; the defaults (pruned,
# and where the tiny models' greedy tokens differ between the two rules)
CONFIGS = {
    "off": None,
    "short64-medium64": FluxMemConfig(short_frames=64, medium_frames=64),
    "short4-medium8": FluxMemConfig(short_frames=4, medium_frames=8),
    "defaults": FluxMemConfig(),
}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny_qwen2_5_vl(seed=0) if family == "qwen2_5_vl" else build_tiny(family)
        return cache[family]

    return get


def _frames(count=16, seed=0):
    return torch.from_numpy(moving_square_frames(count, square=56, seed=seed)).permute(0, 3, 1, 2).contiguous()


def _stock_positions(model, inputs):
    rope = {k: inputs[k] for k in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts", "attention_mask", "mm_token_type_ids")
            if k in inputs}  # fmt: skip
    if model.config.model_type == "qwen2_vl":
        rope.pop("second_per_grid_ts", None)
    return model.model.get_rope_index(inputs["input_ids"], **rope)[0]


class _Seen:
    """The positions the language model receives, call by call (prefill first)."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.model.language_model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(hf.mrope_rows(kwargs["position_ids"]).clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _generate(model, inputs, **kwargs):
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)
    return out[:, inputs["input_ids"].shape[1] :]


def _memory_options(config):
    if config is None:
        return {"use_fluxmem": False}
    return {"use_fluxmem": True, "short_frames": config.short_frames, "medium_frames": config.medium_frames}


# ------------------------------------------------------------------------------- one prompt
@pytest.mark.parametrize("family", FAMILIES)
def test_default_positions_equal_the_original_rule_built_by_hand(built, family):
    model, processor = built(family)
    inputs = video_inputs(processor, _frames())
    (hand,), (next_position,) = original_positions(model.config, inputs)
    hand = as_tensor(hand)
    stock = _stock_positions(model, inputs)[:, 0]
    assert not torch.equal(hand, stock)  # the clip tells the rules apart: text after the video differs
    video = inputs["input_ids"][0] == model.config.video_token_id
    assert torch.equal(hand[:, video], stock[:, video])  # ... and only there
    assert int(hand[0, video].max()) > int(hand[1:, video].max())  # the temporal extent decides

    adapter = registry.adapter_for(model)
    rope = {k: inputs.get(k) for k in ("mm_token_type_ids", "video_grid_thw", "second_per_grid_ts")}
    positions, deltas = adapter.rope_positions(inputs["input_ids"], **rope)
    assert torch.equal(positions[:, 0], hand)
    assert deltas.tolist() == [[next_position - inputs["input_ids"].shape[1]]]

    install(model, FluxMemConfig(), default_active=False)
    try:
        with _Seen(model) as seen:
            _generate(model, inputs)
        assert torch.equal(seen.calls[0][:, 0], hand)  # the prefill, every token
        decoded = [int(call[0, 0, 0]) for call in seen.calls[1:]]
        assert decoded == list(range(next_position, next_position + len(decoded)))  # one past the largest
        assert all(bool((call == call[0]).all()) for call in seen.calls[1:])  # text: the three rows agree
        with _Seen(model) as seen, torch.inference_mode():  # a plain forward (no generate) too
            model(**inputs)
        assert torch.equal(seen.calls[0][:, 0], hand)
        with _Seen(model) as seen, torch.inference_mode():  # the rule per call
            _generate(model, inputs, positions="transformers")
        assert torch.equal(seen.calls[0][:, 0], stock)
    finally:
        detach(model)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("setting", list(CONFIGS))
def test_greedy_tokens_equal_the_language_model_run_by_hand_at_the_original_positions(built, family, setting):
    model, processor = built(family)
    config = CONFIGS[setting]
    inputs = video_inputs(processor, _frames())
    (hand,), _ = original_positions(model.config, inputs)
    with torch.inference_mode():
        expected = reference_pruned_greedy(model, inputs, config, NEW_TOKENS, positions=as_tensor(hand).unsqueeze(1))
    install(model, FluxMemConfig(), default_active=False)
    try:
        got = _generate(model, inputs, **_memory_options(config))[0].tolist()
        assert got == expected
        if setting == "defaults":  # the positions matter: the stock rule answers differently here
            assert _generate(model, inputs, positions="transformers", **_memory_options(config))[0].tolist() != got
    finally:
        detach(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_transformers_equals_stock_generate_bit_for_bit(built, family):
    model, processor = built(family)
    inputs = video_inputs(processor, _frames())
    options = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "output_scores": True, "return_dict_in_generate": True}
    with torch.inference_mode():
        stock = model.generate(**inputs, **options)
        stock_logits = model(**inputs).logits
    fluxmem.enable(model, positions="transformers")
    try:
        with torch.inference_mode():
            for call in ({"use_fluxmem": False}, {"use_fluxmem": True, "short_frames": 64, "medium_frames": 64}):
                ours = model.generate(**inputs, **options, **call)
                assert torch.equal(ours.sequences, stock.sequences), call
                assert all(torch.equal(a, b) for a, b in zip(ours.scores, stock.scores)), call
            assert torch.equal(model(**inputs, use_fluxmem=False).logits, stock_logits)
        assert get_state(model).positions == "transformers"
    finally:
        fluxmem.disable(model)
    with fluxmem.enabled(model, positions="transformers"), torch.inference_mode():  # the block form
        assert torch.equal(model.generate(**inputs, **options, use_fluxmem=False).sequences, stock.sequences)
    assert get_state(model) is None


def test_training_forward_numbers_by_the_original_rule(built):
    model, processor = built("qwen2_5_vl")
    inputs = video_inputs(processor, _frames())
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.video_token_id, -100)
    (hand,), _ = original_positions(model.config, inputs)
    install(model, FluxMemConfig(), default_active=False)
    model.train()
    try:
        with _Seen(model) as seen:
            loss = model(**inputs, labels=labels).loss
        assert torch.equal(seen.calls[0][:, 0], as_tensor(hand)) and torch.isfinite(loss)
    finally:
        model.eval()
        detach(model)


# ------------------------------------------------------------------------------- batches
@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_with_two_videos_and_an_image_follows_the_original_rule(built, family):
    """Two prompts of different lengths, left-padded: the first holds an image and two videos, the
    second one shorter video. Every valid token of every sample gets its hand-built position;
    decoding continues per sample one past its largest; with the memory on, the text after each
    video (always kept) keeps its position."""
    model, processor = built(family)
    clips = [_frames(16, seed=1), _frames(8, seed=2), _frames(12, seed=3)]
    image = _frames(2, seed=4)[0]
    contents = [
        [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "and"}, {"type": "video"},
         {"type": "text", "text": "What moves?"}],
        [{"type": "video"}, {"type": "text", "text": "Describe the colours of the square, please."}],
    ]  # fmt: skip
    texts = [processor.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
             for c in contents]  # fmt: skip
    metadata = [{"total_num_frames": len(c), "fps": 2.0, "frames_indices": list(range(len(c))), "duration": len(c) / 2.0}
                for c in clips]  # fmt: skip
    processor.tokenizer.padding_side = "left"
    batch = processor(text=texts, images=[image], videos=clips, padding=True, return_tensors="pt", do_sample_frames=False,
                      video_metadata=metadata)  # fmt: skip
    mask = batch["attention_mask"].bool()
    assert not bool(mask[:, 0].all()) and bool(mask[:, -1].all())  # left padding
    hand, nexts = original_positions(model.config, batch)
    stock = _stock_positions(model, batch)
    assert any(not torch.equal(as_tensor(h), stock[:, row, mask[row]]) for row, h in enumerate(hand))

    install(model, FluxMemConfig(short_frames=4, medium_frames=8), default_active=False)
    try:
        for use in (False, True):
            with _Seen(model) as seen:
                _generate(model, batch, use_fluxmem=use)
            prefill, decode = seen.calls[0], seen.calls[1:]
            for row, expected in enumerate(hand):
                expected = as_tensor(expected)
                if not use:
                    assert torch.equal(prefill[:, row, mask[row]], expected), (use, row)
                else:  # pruned: the text after the last video (always kept, at the end of the row) follows the rule
                    ids = batch["input_ids"][row]
                    after = len(ids) - 1 - int((ids == model.config.video_token_id).nonzero().max())
                    assert torch.equal(prefill[:, row, -after:], expected[:, -after:]), (use, row)
                assert [int(call[0, row, 0]) for call in decode] == list(range(nexts[row], nexts[row] + len(decode)))
            reports = get_state(model).last_report.videos
            assert (len(reports) == 3 and any(r.kept < r.tokens for r in reports)) if use else not reports
    finally:
        detach(model)


# ------------------------------------------------------------------------------- session
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("positions", ["original", "transformers"])
def test_streaming_session_numbers_by_its_rule_and_equals_generate(built, family, positions):
    model, processor = built(family)
    frames = _frames(16)
    session = fluxmem.StreamSession(model, processor, fps=2.0, short_frames=4, medium_frames=8, positions=positions,
                                    keep_frames=True)  # fmt: skip
    for index, frame in enumerate(frames):
        session.push(frame, index / 2.0)
    with _Seen(model) as seen:
        answer = session.ask("What is moving?", max_new_tokens=NEW_TOKENS)
    inputs = session.offline_inputs("What is moving?")
    if positions == "original":
        (hand,), (next_position,) = original_positions(model.config, inputs)
        tail = as_tensor(hand)[:, -5:]
    else:
        stock = _stock_positions(model, inputs)[:, 0]
        tail, next_position = stock[:, -5:], int(stock[0, -1]) + 1
    # the question's last tokens, then decoding one position on from the rule's continuation
    assert torch.equal(seen.calls[0][:, 0, -5:], tail)
    assert int(seen.calls[1][0, 0, 0]) == next_position
    install(model, FluxMemConfig(), default_active=False)
    try:
        with torch.inference_mode():
            out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=NEW_TOKENS, do_sample=False)
        assert answer.token_ids == out[0, inputs["input_ids"].shape[1] :].tolist()
    finally:
        detach(model)


# ------------------------------------------------------------------------------- probe and options
def test_doctor_says_which_rule_transformers_and_fluxmem_use(capsys):
    from fluxmem.cli import main

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"transformers {hf.installed_version()} puts text after a video at the video's first position + max(H, W)")
    # the probe: a video of 4 one-cell steps after 2 text tokens (Qwen2.5-VL: 2 positions per second)
    assert "Qwen2-VL: video at 2..5, next text at 3, Qwen2.5-VL: video at 2..8, next text at 3)" in line
    assert ("fluxmem applies one past the largest position the video used (Qwen2-VL: video at 2..5, next text at 6, "
            "Qwen2.5-VL: video at 2..8, next text at 9)") in line  # fmt: skip


def _rope_index_by(rule, stock):
    """A stand-in ``get_rope_index`` numbering text after a video by ``rule`` ("after_max", or
    "shifted": one more than transformers'), otherwise as ``stock``."""

    def get_rope_index(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None, attention_mask=None, **kwargs):  # fmt: skip
        positions, deltas = stock(self, input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
                                  video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts,
                                  attention_mask=attention_mask, **kwargs)  # fmt: skip
        video = (mm_token_type_ids == 2).nonzero()
        if len(video):
            row, last = video[-1].tolist()
            shift = int(positions[:, row, : last + 1].max()) + 1 - int(positions[0, row, last + 1]) if rule == "after_max" else 1
            positions[:, row, last + 1 :] += shift
            deltas = deltas + shift
        return positions, deltas

    return get_rope_index


def test_the_start_up_check_notices_a_change_of_the_rule(monkeypatch):
    model, _ = build_tiny_qwen2_5_vl()
    assert hf.text_after_video(model)[0] == "after_grid"
    hf.check_model(model)  # today's rule: silent
    core_class = type(model.model)
    stock = core_class.get_rope_index
    monkeypatch.setattr(core_class, "get_rope_index", _rope_index_by("after_max", stock))
    with pytest.warns(UserWarning, match=r"changed where .*get_rope_index puts text after a video: one past the largest "
                      r"position the video used \(video at 2\.\.8, next text at 9\), no longer the video's first position"):  # fmt: skip
        hf.check_model(model)
    monkeypatch.setattr(core_class, "get_rope_index", _rope_index_by("shifted", stock))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnsupportedTransformersError, match=r"text after a video by an unknown rule \(video at 2\.\.8, "
                           r"next text at 4; expected the video's first position \+ max\(H, W\)\)"):  # fmt: skip
            hf.check_model(model)


def test_unknown_position_rule_is_one_clear_error(built):
    model, processor = built("qwen2_5_vl")
    with pytest.raises(ConfigError, match="positions must be one of 'original', 'transformers', got 'stock'"):
        fluxmem.enable(model, positions="stock")
    assert get_state(model) is None
    fluxmem.enable(model)
    try:
        inputs = video_inputs(processor, _frames(4))
        with pytest.raises(ConfigError, match="got 'v4'"):
            model.generate(**inputs, max_new_tokens=1, positions="v4")
        with pytest.raises(ConfigError, match="got 'v4'"):
            fluxmem.StreamSession(model, processor, positions="v4")
    finally:
        fluxmem.disable(model)


def test_command_line_and_evaluation_record_the_rule(tmp_path):
    import json

    from fluxmem.cli import build_parser
    from fluxmem.eval.runner import Reply, RunSettings, run_benchmark
    from fluxmem.eval.synthetic import write_streamingbench_fixture

    parse = build_parser().parse_args
    assert parse(["ask", "v.mp4", "q", "--model", "m", "--positions", "transformers"]).positions == "transformers"
    assert parse(["ask", "v.mp4", "q", "--model", "m"]).positions == "original"
    for command in (["stream", "x"], ["visualize", "v.mp4", "--out", "o"], ["demo"]):
        assert parse([*command, "--model", "m", "--positions", "transformers"]).positions == "transformers"
    with pytest.raises(SystemExit):
        parse(["ask", "v.mp4", "q", "--model", "m", "--positions", "v4"])

    fixture = write_streamingbench_fixture(tmp_path / "sb")
    settings = {"benchmark": "streamingbench", "annotations": str(fixture["annotations"]),
                "videos": str(fixture["videos"]), "out": str(tmp_path / "run"), "model": "scripted", "tasks": ("OP",)}  # fmt: skip
    answerer = lambda *args, **kwargs: Reply(text="A")  # noqa: E731
    run_benchmark(RunSettings(**settings, positions="transformers"), answerer=answerer, progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["positions"] == "transformers"
    records = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert records and {r["positions"] for r in records} == {"transformers"}
    with pytest.raises(ConfigError):  # the rule decides the answers: a resumed run must keep it
        run_benchmark(RunSettings(**settings), answerer=answerer, progress=False)
    with pytest.raises(ConfigError, match="positions must be 'original' or 'transformers'"):
        RunSettings(**settings, positions="stock")
