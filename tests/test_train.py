"""fluxmem.train on the tiny offline Qwen2.5-VL and synthetic videos (CPU, a few seconds per run)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import fluxmem
from fluxmem.errors import ConfigError, InputError
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames, write_video
from fluxmem.train import (
    DatasetSpec,
    SupervisedCollator,
    SupervisedDataset,
    TrainConfig,
    load_for_training,
    load_trained,
    mix,
    param_groups,
    parse_overrides,
    read_records,
    train,
)
from fluxmem.train.data import Record

REPO = Path(__file__).resolve().parents[1]
ANSWERS = ["A red square.", "The square moves right.", "Yes.", "No."]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A saved tiny model and a data folder: four good videos, one broken file, one missing."""
    base = tmp_path_factory.mktemp("train")
    model_dir = base / "tiny"
    build_tiny_qwen2_5_vl(model_dir)
    data = base / "data"
    (data / "clips").mkdir(parents=True)
    for k in range(4):
        write_video(data / "clips" / f"v{k}.mp4", moving_square_frames(8, seed=k), fps=2)
    (data / "clips" / "broken.mp4").write_bytes(b"this is not a video")
    lines = [
        {"video": f"clips/v{k}.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat is moving?"}, {"from": "gpt", "value": ANSWERS[k]}]}
        for k in range(4)
    ]
    lines.insert(2, {"video": "clips/broken.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "No."}]})
    lines.insert(4, {"video": "clips/missing.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "Yes."}]})
    annotations = data / "train.jsonl"
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"base": base, "model": str(model_dir), "data": data, "annotations": str(annotations)}


def _config(ws, output: str, **overrides) -> TrainConfig:
    settings = dict(
        model=ws["model"], output_dir=str(ws["base"] / output), datasets=[ws["annotations"]],
        fps=2.0, max_frames=8, max_pixels=112 * 112, video_context=None, short_frames=2, medium_frames=4,
        gradient_accumulation_steps=1, learning_rate=1e-3, merger_lr=1e-3, warmup_ratio=0.0,
        lr_scheduler_type="constant", bf16=False, dataloader_num_workers=0, logging_steps=5, save_steps=1000,
        use_cpu=True, report_to="none",
    )
    settings.update(overrides)
    return TrainConfig(**settings)


class _Capture:
    """Trainer callback keeping the trained model and the steps it ran."""

    def __init__(self):
        from transformers import TrainerCallback

        outer = self
        self.model, self.steps = None, []

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.steps.append(state.global_step)

            def on_train_end(self, args, state, control, model=None, **kwargs):
                outer.model = model

        self.callback = Callback()


def _probe_batch(ws):
    """A fixed two-sample batch (right-padded) from the good videos, as the trainer sees it."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(ws["model"])
    config = _config(ws, "probe")
    dataset = SupervisedDataset(read_records(DatasetSpec(ws["annotations"])), processor, config)
    return SupervisedCollator(processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Different outputs (a changed model may also keep a different number of visual tokens)."""
    return a.shape != b.shape or not torch.allclose(a, b, atol=1e-3)


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


# ------------------------------------------------------------------------------ full fine-tuning
@pytest.fixture(scope="module")
def full_run(workspace):
    capture = _Capture()
    result = train(_config(workspace, "full", max_steps=30), callbacks=[capture.callback])
    return result, capture


def test_loss_falls_with_fluxmem_active(full_run):
    result, _ = full_run
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert result.global_step == 30 and len(losses) == 6
    factor = losses[-1] / losses[0]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} (x{factor:.3f})")
    assert factor < 0.5
    retained = [entry["fluxmem_retained"] for entry in result.log_history if "fluxmem_retained" in entry]
    assert retained and all(0.0 < r < 0.6 for r in retained)  # the memory pruned in every logged step


def test_bad_videos_are_skipped_and_reported(full_run, workspace):
    result, _ = full_run
    report = Path(result.output_dir) / "skipped_samples.jsonl"
    entries = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(e["record"] for e in entries) == [2, 4]
    assert result.skipped == 2
    by_record = {e["record"]: e for e in entries}
    assert by_record[2]["media"][0].endswith("broken.mp4") and "VideoError" in by_record[2]["reason"]
    assert by_record[4]["media"][0].endswith("missing.mp4") and "missing file" in by_record[4]["reason"]


def test_full_model_saves_settings_and_reloads_identically(full_run, workspace):
    from fluxmem.loading import load_model

    result, capture = full_run
    saved = json.loads((Path(result.output_dir) / "config.json").read_text())["fluxmem"]
    assert saved == {"short_frames": 2, "medium_frames": 4, "direct_drop_sim": 0.8, "pair_sim_threshold": None,
                     "use_fluxmem": True}
    model, _ = load_model(result.output_dir, device="cpu")
    state = fluxmem.get_state(model)
    assert (state.config.short_frames, state.config.medium_frames, state.default_active) == (2, 4, True)
    batch = _probe_batch(workspace)
    reloaded = _logits(model, batch)
    assert torch.equal(_logits(capture.model, batch), reloaded)
    base, _ = load_model(workspace["model"], device="cpu", fluxmem=state.config)
    assert _differs(_logits(base, batch), reloaded)
    before, after = dict(base.named_parameters()), dict(model.named_parameters())
    for name, param in after.items():
        changed = not torch.equal(param, before[name])
        frozen = "visual." in name and "visual.merger." not in name
        assert changed is not frozen or name.endswith("k_proj.bias"), name  # k bias: no gradient under softmax  # training changed the model


# ------------------------------------------------------------------------------ LoRA
def test_lora_adapters_save_reload_and_merge(workspace):
    from fluxmem.loading import load_model

    capture = _Capture()
    config = _config(workspace, "lora", lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, merge_lora=True,
                     max_steps=6, learning_rate=1e-2)
    result = train(config, callbacks=[capture.callback])
    out = Path(result.output_dir)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "fluxmem.json").read_text())["medium_frames"] == 4
    batch = _probe_batch(workspace)
    trained = _logits(capture.model, batch)  # merge_and_unload folded the adapters into this instance
    adapters, _ = load_trained(out)
    assert fluxmem.get_state(adapters).config.short_frames == 2
    from_adapters = _logits(adapters, batch)
    merged, _ = load_model(result.merged_dir, device="cpu")
    assert fluxmem.get_state(merged).config.medium_frames == 4
    from_merged = _logits(merged, batch)
    torch.testing.assert_close(from_adapters, from_merged, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(trained, from_merged, atol=1e-4, rtol=1e-4)
    adapters2, _ = load_trained(out)
    assert torch.equal(_logits(adapters2, batch), from_adapters)  # adapter reload is exact and repeatable
    base, _ = load_model(workspace["model"], device="cpu")
    assert _differs(_logits(base, batch), from_adapters)
    # the adapter directory itself loads (base + adapters merged), as `fluxmem ask --model OUT` does
    direct, _ = load_model(out, device="cpu")
    assert fluxmem.get_state(direct).config.medium_frames == 4
    torch.testing.assert_close(_logits(direct, batch), from_merged, atol=1e-4, rtol=1e-4)


def test_ask_takes_the_lora_output_directory(workspace, capsys):
    from fluxmem.cli import main

    out = workspace["base"] / "lora-ask"
    train(_config(workspace, "lora-ask", lora=True, lora_r=4, lora_alpha=8, max_steps=1))
    capsys.readouterr()
    code = main(["ask", str(workspace["data"] / "clips" / "v0.mp4"), "Where is the square?", "--model", str(out),
                 "--device", "cpu", "--fps", "2", "--short-frames", "2", "--medium-frames", "4", "--max-new-tokens", "2",
                 "--no-progress", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["memory"]["videos"] == 1 and result["memory"]["kept"] < result["memory"]["tokens"]


# ------------------------------------------------------------------------------ resume
def test_resume_continues_at_the_saved_step(workspace):
    first = _config(workspace, "resume", max_steps=4, save_steps=2, logging_steps=1)
    train(first)
    assert sorted(os.listdir(first.output_dir)).count("checkpoint-4") == 1
    capture = _Capture()
    second = _config(workspace, "resume", max_steps=8, save_steps=2, logging_steps=1, resume_from_checkpoint="last")
    result = train(second, callbacks=[capture.callback])
    assert capture.steps == [5, 6, 7, 8] and result.global_step == 8
    straight = _Capture()
    train(_config(workspace, "straight", max_steps=8, save_steps=1000, logging_steps=1), callbacks=[straight.callback])
    for (name, a), (_, b) in zip(capture.model.named_parameters(), straight.model.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)  # same as never stopping


# ------------------------------------------------------------------------------ labels
def test_labels_cover_exactly_the_assistant_turns(workspace):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(workspace["model"])
    record = Record("x", 0, [str(workspace["data"] / "clips" / "v0.mp4")], [], [
        ("user", "<video>\nWhat is moving?"), ("assistant", "A red square."),
        ("user", "Where does it go?"), ("assistant", "The square moves right."),
    ])
    sample = SupervisedDataset([record], processor, _config(workspace, "labels")).build(record)
    labels, ids = sample["labels"], sample["input_ids"]
    labelled = (labels != -100).nonzero().squeeze(1)
    assert torch.equal(labels[labelled], ids[labelled])
    spans = torch.tensor_split(labelled, (torch.diff(labelled) > 1).nonzero().squeeze(1) + 1)
    texts = [processor.tokenizer.decode(ids[span]) for span in spans]
    assert texts == ["A red square.<|im_end|>", "The square moves right.<|im_end|>"]


def test_pruned_labels_stay_on_their_tokens(workspace):
    """Labels never sit on dropped positions and every answer token keeps its label."""
    from fluxmem.adapters.pruning import prune_prefill

    model, _ = build_tiny_qwen2_5_vl()
    fluxmem.enable(model, short_frames=2, medium_frames=4)
    model.train()
    batch = _probe_batch(workspace)
    assert not bool(batch["attention_mask"][:, -1].all())  # right padding is exercised
    seen = {}
    model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)  # runs after the switch
    loss = model(**batch).loss
    new_labels, old_labels = seen["labels"], batch["labels"]
    assert new_labels.shape[1] < old_labels.shape[1]  # the sequence was pruned
    assert fluxmem.get_state(model).summary()["retained_fraction"] < 0.6
    state = fluxmem.get_state(model)
    prepared = state.adapter.prepare(**batch)
    replay = prune_prefill(state.adapter, prepared, batch["input_ids"], batch["attention_mask"],
                           batch["video_grid_thw"], state.config, labels=old_labels)
    assert torch.equal(replay.labels, new_labels)
    for b in range(old_labels.shape[0]):
        old_kept = old_labels[b][old_labels[b] != -100]
        assert torch.equal(new_labels[b][new_labels[b] != -100], old_kept)  # every answer token keeps its label
        slots = (new_labels[b] != -100).nonzero().squeeze(1)
        origin = replay.kept_index[b, slots]
        assert bool((origin >= 0).all())
        assert torch.equal(batch["input_ids"][b, origin], new_labels[b, slots])  # label = the token at that slot
        assert torch.equal(replay.kept_index[b, slots - 1], origin - 1)  # its context token was kept too
        dropped = torch.ones(old_labels.shape[1], dtype=torch.bool)
        dropped[replay.kept_index[b][replay.kept_index[b] >= 0]] = False
        assert bool((old_labels[b][dropped] == -100).all()) and bool(dropped.any())
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------ what is trained
def test_parameter_groups_and_freezing(workspace):
    model, _ = load_for_training(_config(workspace, "groups", merger_lr=2e-3, vision_lr=3e-6))
    groups = param_groups(model, {"llm": 1e-3, "merger": 2e-3, "vision": 3e-6}, 0.01)
    assert {g["component"] for g in groups} == {"llm", "merger"}  # vision tower frozen by default
    assert {g["component"]: g["lr"] for g in groups} == {"llm": 1e-3, "merger": 2e-3}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("visual." in n and "visual.merger." not in n for n in frozen)
    assert model.config.fluxmem["short_frames"] == 2
    model, _ = load_for_training(_config(workspace, "groups", tune_vision=True, tune_llm=False))
    groups = param_groups(model, {"llm": 1e-3, "merger": 2e-3, "vision": 3e-6}, 0.01)
    assert {g["component"]: g["lr"] for g in groups} == {"merger": 2e-3, "vision": 3e-6}
    assert any(g["weight_decay"] == 0.0 for g in groups) and any(g["weight_decay"] == 0.01 for g in groups)


def test_mixing_with_sampling_rates(workspace):
    a = [Record("a", i, [], [], [("assistant", "x")]) for i in range(10)]
    b = [Record("b", i, [], [], [("assistant", "x")]) for i in range(4)]
    mixed = mix([a, b], [0.5, 2.5], seed=1)
    assert sum(r.dataset == "a" for r in mixed) == 5 and sum(r.dataset == "b" for r in mixed) == 10
    assert len({r.index for r in mixed if r.dataset == "a"}) == 5
    assert mixed == mix([a, b], [0.5, 2.5], seed=1)
    assert DatasetSpec.parse("x.jsonl%50", None).sampling_rate == 0.5


# ------------------------------------------------------------------------------ errors
def test_unknown_config_key_names_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nlearning_rat: 1e-5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match=r"unknown option --medium_frame \(did you mean --medium_frames\?\)"):
        parse_overrides(["--medium_frame", "8"])
    assert parse_overrides(["--lora", "true", "--max-steps", "-1", "--datasets=[a.json, b.json%50]"]) == {
        "lora": True, "max_steps": -1, "datasets": ["a.json", "b.json%50"]}
    with pytest.raises(ConfigError, match="learning_rate must be a number"):
        TrainConfig(learning_rate="fast")


def test_missing_data_root_and_assistant_turn(workspace, tmp_path):
    with pytest.raises(ConfigError, match="data_root '/no/such/folder' does not exist"):
        _config(workspace, "x", data_root="/no/such/folder").require_runnable()
    with pytest.raises(ConfigError, match="data root .* does not exist"):
        read_records(DatasetSpec(workspace["annotations"], data_root=str(tmp_path / "nope")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]}) + "\n"
                   + json.dumps({"video": "v.mp4", "conversations": [{"from": "human", "value": "<video>\nhi"}]}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl, record 1: the conversation has no assistant turn"):
        read_records(DatasetSpec(str(bad)))


def test_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    from fluxmem import cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("train",))
    assert cli.main(["train", "--lerning_rate", "1e-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fluxmem train: error: unknown option --lerning_rate (did you mean --learning_rate?)."
    assert cli.main(["train", "--model", "m", "--datasets", "a.jsonl", "--data_root", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_smoke_config_runs(workspace, monkeypatch, capsys):
    from fluxmem import cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("train",))
    out = workspace["base"] / "smoke"
    code = cli.main(["train", str(REPO / "configs/train/smoke_cpu.yaml"), "--model", workspace["model"],
                     "--datasets", workspace["annotations"], "--output-dir", str(out), "--max_steps", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and (out / "model.safetensors").is_file() and (out / "checkpoint-2").is_dir()


def test_train_with_another_memory_method_records_and_reloads_it(workspace, monkeypatch, capsys):
    from fluxmem import cli, get_state
    from fluxmem.train import load_trained

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("train",))
    out = workspace["base"] / "evs"
    code = cli.main(["train", str(REPO / "configs/train/smoke_cpu.yaml"), "--model", workspace["model"],
                     "--datasets", workspace["annotations"], "--output-dir", str(out), "--max_steps", "1",
                     "--memory", "evs", "--budget", "0.5"])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "config.json").read_text())["fluxmem"]
    assert (saved["memory"], saved["budget"]) == ("evs:0.5", "0.5")
    model, _ = load_trained(out)
    state = get_state(model)
    assert (state.method.spec, str(state.budget)) == ("evs:0.5", "0.5")
    reloaded, _ = fluxmem.loading.load_model(out)  # `fluxmem ask --model OUT` too: the method is not lost
    assert (get_state(reloaded).method.spec, str(get_state(reloaded).budget)) == ("evs:0.5", "0.5")
    assert cli.main(["train", "--model", "m", "--datasets", "a.jsonl", "--memory", "vidcom3"]) == 2
    assert "unknown memory method 'vidcom3'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ shipped configs
def test_recipe_config_is_the_published_recipe():
    config = TrainConfig.from_yaml(REPO / "configs/train/qwen2_5_vl_7b_fluxmem.yaml")
    assert (config.learning_rate, config.merger_lr, config.vision_lr) == (1e-5, 1e-5, 1e-6)
    assert (config.weight_decay, config.warmup_ratio, config.lr_scheduler_type) == (0.01, 0.05, "cosine")
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps, config.num_train_epochs) == (1, 16, 1.0)
    assert (config.max_frames, config.max_pixels, config.video_context) == (256, 256 * 28 * 28, 128.0)
    assert (config.short_frames, config.medium_frames, config.use_fluxmem) == (8, 64, True)
    assert (config.tune_llm, config.tune_merger, config.tune_vision, config.bf16, config.gradient_checkpointing) == (
        True, True, False, True, True)
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("model", "output_dir", "datasets", "deepspeed",
                                                                       "attn_implementation")}
    defaults = {k: v for k, v in TrainConfig().to_dict().items() if k in recipe}
    assert recipe == defaults  # the dataclass defaults are the recipe too
    lora = TrainConfig.from_yaml(REPO / "configs/train/qwen2_5_vl_7b_fluxmem_lora.yaml")
    assert lora.lora and lora.merge_lora and lora.lora_r == 64
    assert Path(REPO / config.deepspeed).is_file()


@pytest.mark.parametrize("name,stage,offload", [("zero2", 2, False), ("zero3", 3, False), ("zero3_offload", 3, True)])
def test_deepspeed_configs(name, stage, offload):
    config = json.loads((REPO / "configs/deepspeed" / f"{name}.json").read_text())
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert "optimizer" not in config and "scheduler" not in config  # the Trainer's per-component groups are used
    assert config["train_micro_batch_size_per_gpu"] == "auto" and config["gradient_accumulation_steps"] == "auto"
    assert ("offload_optimizer" in zero) is offload and (zero.get("offload_param", {}).get("device") == "cpu") is offload
