"""LoRA adapters name their base model so that they load from any working directory: training on
a local model stores its absolute path, and a relative path in ``adapter_config.json`` is read
against the adapter directory itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import fluxmem
from fluxmem.errors import ConfigError
from fluxmem.loading import adapter_base_model, load_model
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames, write_video
from fluxmem.train import TrainConfig, load_trained, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LoRA adapters trained from inside ``base`` on the model given as the relative path ``tiny``."""
    base = tmp_path_factory.mktemp("lora-paths")
    build_tiny_qwen2_5_vl(base / "tiny")
    (base / "clips").mkdir()
    write_video(base / "clips" / "v.mp4", moving_square_frames(8), fps=2)
    line = {"video": "clips/v.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat is moving?"}, {"from": "gpt", "value": "A red square."}]}
    (base / "train.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        config = TrainConfig(
            model="tiny", output_dir="out", datasets=["train.jsonl"], lora=True, lora_r=4, lora_alpha=8,
            max_steps=2, learning_rate=1e-2, fps=2.0, max_frames=8, max_pixels=112 * 112, video_context=None,
            short_frames=2, medium_frames=4, warmup_ratio=0.0, bf16=False, dataloader_num_workers=0,
            use_cpu=True, report_to="none", save_steps=1000,
        )
        train(config)
    return base


def _adapter_config(directory: Path) -> dict:
    return json.loads((directory / "adapter_config.json").read_text())


def _lora_weight(model) -> torch.Tensor:
    return dict(model.named_parameters())["model.language_model.layers.0.self_attn.q_proj.weight"].detach().clone()


def test_training_stores_the_local_base_model_as_an_absolute_path(trained):
    assert _adapter_config(trained / "out")["base_model_name_or_path"] == str((trained / "tiny").resolve())


def test_the_adapters_load_from_another_directory(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing named "tiny" or "out" here
    adapters = trained / "out"
    model, _ = load_model(adapters, device="cpu")
    again, _ = load_trained(adapters)
    assert fluxmem.get_state(model).config.medium_frames == 4
    base, _ = load_model(trained / "tiny", device="cpu")
    merged = _lora_weight(model)
    assert not torch.equal(merged, _lora_weight(base))  # the adapters were applied
    assert torch.equal(merged, _lora_weight(again.merge_and_unload()))


def test_a_relative_base_is_read_against_the_adapter_directory(trained, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(trained / "out", moved / "adapters")
    shutil.copytree(trained / "tiny", moved / "tiny")
    record = _adapter_config(moved / "adapters")
    record["base_model_name_or_path"] = "../tiny"
    (moved / "adapters" / "adapter_config.json").write_text(json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert adapter_base_model(moved / "adapters") == str((moved / "tiny").resolve())
    model, _ = load_model(moved / "adapters", device="cpu")
    reference, _ = load_model(trained / "out", device="cpu")
    assert torch.equal(_lora_weight(model), _lora_weight(reference))


def test_a_hub_id_stays_and_a_missing_relative_path_is_one_error(tmp_path):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for base in ("Qwen/Qwen2.5-VL-7B-Instruct", "/models/base"):  # kept as stored
        (adapters / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        assert adapter_base_model(adapters) == base
    (adapters / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../gone/tiny"}))
    with pytest.raises(ConfigError, match=r"'\.\./gone/tiny', a relative path that is not beside the adapters"):
        adapter_base_model(adapters)
    (adapters / "adapter_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read .*adapter_config.json"):
        adapter_base_model(adapters)
