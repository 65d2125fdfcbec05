"""Every mistake in a Python API call is one clear error naming the problem and the fix, raised
before anything runs (a config, a sampling option, a session, a scoring call), never a later
AttributeError or a silently degraded result. One row per case."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import fluxmem
from fluxmem.errors import ConfigError, InputError, OutputError
from fluxmem.memory import FluxMemConfig, compress


@pytest.fixture(scope="module")
def tiny():
    from fluxmem.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl()


def _features(t=4, h=2, w=2, d=8):
    return torch.randn(t * h * w, d, generator=torch.Generator().manual_seed(0))


# (case, call, error class, the whole message or a regular expression of it)
CONFIGS = [
    ("short_frames as a string", lambda: FluxMemConfig(short_frames="8"), ConfigError,
     "short_frames must be an integer number of raw frames, got '8'."),
    ("direct_drop_sim as a string", lambda: FluxMemConfig(direct_drop_sim="0.5"), ConfigError,
     "direct_drop_sim must be a number (a cosine similarity in [-1, 1]) or None, got '0.5'."),
    ("pair_sim_threshold NaN", lambda: FluxMemConfig(pair_sim_threshold=math.nan), ConfigError,
     "pair_sim_threshold is a cosine similarity and must lie in [-1, 1] (or be None), got nan."),
    ("from_dict with a misspelt key", lambda: FluxMemConfig.from_dict({"short_frame": 4}), ConfigError,
     "unknown FluxMem setting 'short_frame'; did you mean 'short_frames'?"),
    ("from_dict with a key like none", lambda: FluxMemConfig.from_dict({"zzz": 1}), ConfigError,
     "unknown FluxMem setting 'zzz'; the settings are short_frames, medium_frames, direct_drop_sim, pair_sim_threshold."),
    ("from_dict of a string", lambda: FluxMemConfig.from_dict("fast"), ConfigError,
     "FluxMem settings must be a dict such as {'short_frames': 8}, got str 'fast'."),
    ("compress a numpy array", lambda: compress(_features().numpy(), (4, 2, 2)), InputError,
     "features must be a floating-point torch.Tensor [T*H*W, D], got ndarray; e.g. torch.from_numpy(array).float()."),
    ("compress integer features", lambda: compress(torch.ones(16, 8, dtype=torch.long), (4, 2, 2)), InputError,
     "features must be a floating-point torch.Tensor [T*H*W, D], got a torch.int64 tensor; e.g. torch.from_numpy(array).float()."),
    ("compress with a dict config", lambda: compress(_features(), (4, 2, 2), {"short_frames": 2}), ConfigError,
     ("config must be a FluxMemConfig (e.g. FluxMemConfig(short_frames=8) or FluxMemConfig.from_dict({...})), "
      "got dict {'short_frames': 2}.")),
    ("compress NaN features", lambda: compress(_features().index_fill(0, torch.tensor([3]), math.nan), (4, 2, 2)), InputError,
     "features hold NaN or infinite values; FluxMem's similarities are undefined on them (check the vision encoder's output)."),
    ("SamplingOptions(max_pixels='big')", lambda: _sampling(max_pixels="big"), ConfigError,
     "max_pixels must be a whole number of pixels >= 1 (or None), e.g. 401408 = 512*28*28, got 'big'."),
    ("SamplingOptions(fps=nan)", lambda: _sampling(fps=math.nan), ConfigError,
     "fps must be a positive number of frames per second, got nan."),
    ("SamplingOptions(min above max)", lambda: _sampling(min_pixels=100000, max_pixels=1000), ConfigError,
     "min_pixels (100000) must not exceed max_pixels (1000); lower the one or raise the other."),
    ("load_model(None)", lambda: _load(None), ConfigError,
     "the model must be a saved model directory or a Hugging Face id such as Qwen/Qwen2.5-VL-7B-Instruct, got None."),
    ("load_model('')", lambda: _load(""), ConfigError,
     "the model must be a saved model directory or a Hugging Face id such as Qwen/Qwen2.5-VL-7B-Instruct, got ''."),
]


def _sampling(**options):
    from fluxmem.inference import SamplingOptions

    return SamplingOptions(**options)


def _load(model, **options):
    from fluxmem.loading import load_model

    return load_model(model, device="cpu", **options)


@pytest.mark.parametrize("case, call, error, message", CONFIGS, ids=[row[0] for row in CONFIGS])
def test_each_api_mistake_is_one_clear_error(case, call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_from_dict_still_reads_what_fluxmem_train_records():
    saved = {**FluxMemConfig(short_frames=4).to_dict(), "use_fluxmem": True}  # config.fluxmem of a trained model
    assert FluxMemConfig.from_dict(saved) == FluxMemConfig(short_frames=4)


def test_load_model_with_a_dict_of_settings_fails_before_loading(tiny_model_dir, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("the weights must not load")))
    with pytest.raises(ConfigError, match=re.escape("fluxmem must be a FluxMemConfig (e.g. FluxMemConfig(short_frames=8)")):
        _load(tiny_model_dir, fluxmem={"short_frames": 4})


# (case, call on the tiny model, error class, message pattern)
MODEL_CALLS = [
    ("enable(model, config='fast')", lambda m, p: fluxmem.enable(m, config="fast"), ConfigError,
     r"^config must be a FluxMemConfig \(.*\), got str 'fast'\.$"),
    ("generate(..., fluxmem_stats='x')", lambda m, p: _generate(m, p, fluxmem_stats="x"), ConfigError,
     r"^fluxmem_stats must be a function that takes the call's MemoryReport \(e\.g\. reports\.append\), got str 'x'\.$"),
    ("StreamSession(max_pixels=0)", lambda m, p: _session(m, p, max_pixels=0), ConfigError,
     r"^max_pixels must be a whole number of pixels >= 1 \(or None\), e\.g\. 401408 = 512\*28\*28, got 0\.$"),
    ("StreamSession(max_pixels=10)", lambda m, p: _session(m, p, max_pixels=10), ConfigError,
     r"^max_pixels 10 is less than one visual token \(28\*28 = 784 pixels for this model\); use max_pixels >= 784"),
    ("StreamSession(min_pixels=-1)", lambda m, p: _session(m, p, min_pixels=-1), ConfigError,
     r"^min_pixels must be a whole number of pixels >= 1 \(or None\), .*got -1\.$"),
    ("StreamSession(config={...})", lambda m, p: _session(m, p, config={"short_frames": 4}), ConfigError,
     r"^config must be a FluxMemConfig"),
    ("StreamSession.ask(123)", lambda m, p: _session(m, p).ask(123), InputError,
     r"^the question must be a string, got int 123\.$"),
    ("answer(..., SamplingOptions(max_pixels=10))", lambda m, p: _answer(m, p, _sampling(max_pixels=10)), ConfigError,
     r"^max_pixels 10 is less than one visual token \(28\*28 = 784 pixels for this model\)"),
    ("answer(..., sampling={...})", lambda m, p: _answer(m, p, {"fps": 2}), ConfigError,
     r"^sampling must be a SamplingOptions\(\.\.\.\), got dict \{'fps': 2\}\.$"),
    ("answer(..., question=5)", lambda m, p: _answer(m, p, None, question=5), InputError,
     r"^the question must be a string, got int 5\.$"),
]


def _session(model, processor, **options):
    from fluxmem.session import StreamSession

    return StreamSession(model, processor, **options)


def _answer(model, processor, sampling, question="What is there?"):
    from fluxmem.inference import answer
    from fluxmem.testing import moving_square_frames

    return answer(model, processor, moving_square_frames(4), question, sampling=sampling, max_new_tokens=1)


def _generate(model, processor, **options):
    fluxmem.enable(model)
    try:
        ids = processor.tokenizer("hello", return_tensors="pt").input_ids
        return model.generate(input_ids=ids, max_new_tokens=1, **options)
    finally:
        fluxmem.disable(model)


@pytest.mark.parametrize("case, call, error, pattern", MODEL_CALLS, ids=[row[0] for row in MODEL_CALLS])
def test_each_call_on_a_model_refuses_its_mistake_in_one_line(tiny, case, call, error, pattern):
    model, processor = tiny
    with pytest.raises(error) as raised:
        call(model, processor)
    assert re.search(pattern, str(raised.value)), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_budget_too_small_for_the_aspect_ratio_names_the_budget_it_needs(tiny):
    from fluxmem.inference import SamplingOptions, answer
    from fluxmem.testing import moving_square_frames

    model, processor = tiny
    frames = moving_square_frames(4, height=112, width=224)  # 2:1: 1000 pixels leave no row of 28x28 tokens
    with pytest.raises(ConfigError, match=re.escape("a budget of 1000 pixels per frame is too small for a 224x112 video: "
                                                    "it leaves no row of 28x28-pixel tokens; use max_pixels >= 1568")):
        answer(model, processor, frames, "What?", sampling=SamplingOptions(max_pixels=1000), max_new_tokens=1)
    with fluxmem.enabled(model):
        result = answer(model, processor, frames, "What?", sampling=SamplingOptions(max_pixels=1568), max_new_tokens=1)
    assert result.memory["tokens"] == 2 * 2  # the named budget works: 2 grid steps of 1x2 tokens


# ---------------------------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def ovo(tmp_path_factory):
    from fluxmem.eval.synthetic import write_ovobench_fixture

    return write_ovobench_fixture(tmp_path_factory.mktemp("ovo") / "ovo")["annotations"]


SCORING = [
    ("out is a file", {"out": "{file}"}, OutputError,
     r"^--out '.*notes\.txt' is a file; the scores go into a folder: pass a folder path \(created if missing\)\.$"),
    ("replies is a directory", {"replies": "{dir}"}, InputError,
     r"^replies '.*' is a directory; pass the JSON-lines file of replies\.$"),
    ("context -5.0", {"context": -5.0}, ConfigError,
     r"^context must be seconds >= 0 before each question \(None: all of the past\), got -5\.0\.$"),
    ("context NaN", {"context": math.nan}, ConfigError, r"^context must be seconds >= 0 .*got nan\.$"),
    ("replies with no usable reply", {"replies": "{empty}"}, InputError,
     r"^replies file '.*empty\.jsonl' holds no reply to any question of the annotations \(0 records read\)"),
]


@pytest.mark.parametrize("case, options, error, pattern", SCORING, ids=[row[0] for row in SCORING])
def test_score_replies_refuses_bad_arguments_and_writes_nothing(ovo, tmp_path, case, options, error, pattern):
    from fluxmem.eval.runner import score_replies

    paths = {"file": tmp_path / "notes.txt", "dir": tmp_path / "replies", "empty": tmp_path / "empty.jsonl"}
    paths["file"].write_text("x")
    paths["dir"].mkdir()
    paths["empty"].write_text("")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": 0, "response": "A"}) + "\n")
    arguments = {"out": str(tmp_path / "scores"), "replies": str(good), **options}
    arguments = {k: v.format(**paths) if isinstance(v, str) else v for k, v in arguments.items()}
    with pytest.raises(error) as raised:
        score_replies("ovobench", ovo, **arguments)
    assert re.search(pattern, str(raised.value)), str(raised.value)
    assert not (tmp_path / "scores").exists()
    assert paths["file"].read_text() == "x"

