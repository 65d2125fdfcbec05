"""Every input mistake on the command line is one line naming the problem and the fix, exit status 2,
checked before the model loads where it can be, and leaves every input file byte-for-byte as it was.

One row per case: the command line (``{clip}``, ``{model}``, ``{questions}``... stand for the files
built below), the exit status, and a piece of the one line printed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fluxmem.cli import main
from fluxmem.eval.synthetic import write_ovobench_fixture
from fluxmem.testing import moving_square_frames, write_video

MODEL_MUST_NOT_LOAD = "the model must not load"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    """Inputs for every case: a clip, a tiny model and broken copies of it, questions and replies."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {"root": root, "model": tiny_model_dir}
    paths["clip"] = write_video(root / "clip.mp4", moving_square_frames(4), fps=2.0)
    paths["questions"] = _write(root / "q.jsonl", json.dumps({"time": 0, "question": "What is there?"}) + "\n")
    paths["q_nan"] = _write(root / "q_nan.jsonl", '{"time": NaN, "question": "What?"}\n')
    paths["q_huge"] = _write(root / "q_huge.jsonl", '{"time": 1e400, "question": "What?"}\n')
    paths["q_number"] = _write(root / "q_number.jsonl", '{"time": 1, "question": 5}\n')
    for name in ("broken_config", "truncated", "no_processor"):
        shutil.copytree(tiny_model_dir, root / name)
        paths[name] = root / name
    (root / "broken_config" / "config.json").write_text('{"model_type": "qwen2_5_vl",\n')
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for file in (root / "no_processor").iterdir():
        if file.name not in ("config.json", "generation_config.json", "model.safetensors"):
            file.unlink()
    ovo = write_ovobench_fixture(root / "ovo")
    paths["ovo"] = ovo["annotations"]
    paths["replies_dir"] = root / "replies"
    paths["replies_dir"].mkdir()
    paths["replies_empty"] = _write(root / "empty.jsonl", "")
    paths["replies_bad_json"] = _write(root / "bad.jsonl", "{not json\n[1, 2]\n")
    paths["replies_questions"] = paths["questions"]
    paths["replies_utf16"] = root / "utf16.jsonl"
    paths["replies_utf16"].write_text(json.dumps({"id": 0, "response": "A"}) + "\n", encoding="utf-16")
    paths["replies_latin1"] = root / "latin1.jsonl"
    paths["replies_latin1"].write_bytes(b'{"id": 0, "response": "caf\xe9"}\n')
    paths["a_file"] = _write(root / "notes.txt", "not a directory\n")
    paths["train_data"] = _write(root / "train.jsonl", "")
    return paths


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _digest(paths: dict) -> dict[str, str]:
    """sha256 of every input file (folders: every file below them)."""
    out = {}
    for key, path in paths.items():
        if key in ("root", "model"):
            continue
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            out[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


def _run(argv: list[str], files: dict, capsys) -> tuple[int, str]:
    argv = [arg.format(**files) for arg in argv]
    before = _digest(files)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert _digest(files) == before, "an input file changed"
    return code, err


def _one_line(err: str, command: str) -> str:
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"fluxmem {command}: error: "), err
    return err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command gets as far as loading a model."""
    import fluxmem.loading

    def refuse(*args, **kwargs):
        raise AssertionError(MODEL_MUST_NOT_LOAD)

    monkeypatch.setattr(fluxmem.loading, "load_model", refuse)


ASK = ["ask", "{clip}", "What is there?", "--model", "{model}"]
STREAM = ["stream", "{clip}", "--model", "{model}", "--questions", "{questions}"]
VISUALIZE = ["visualize", "{clip}", "--model", "{model}", "--out", "{root}/pictures"]
DEMO = ["demo", "--model", "{model}"]
SERVE = ["serve", "{model}", "--dry-run"]
SCORE_OVO = ["score", "ovobench", "--annotations", "{ovo}", "--out", "{root}/scores"]

# (case, argv, piece of the one line) - every case is refused before any model loads
BEFORE_LOADING = [
    ("ask --max-pixels 10", [*ASK, "--max-pixels", "10"],
     "--max-pixels 10 is less than one visual token (28*28 = 784 pixels for this model); use --max-pixels >= 784"),
    ("visualize --max-pixels 10", [*VISUALIZE, "--max-pixels", "10"], "--max-pixels 10 is less than one visual token"),
    ("stream --max-pixels 0", [*STREAM, "--max-pixels", "0"], "argument --max-pixels: must be a number of pixels >= 1"),
    ("stream --max-pixels 10", [*STREAM, "--max-pixels", "10"], "--max-pixels 10 is less than one visual token"),
    ("stream --min-pixels above --max-pixels", [*STREAM, "--min-pixels", "100000", "--max-pixels", "1000"],
     "--min-pixels (100000) must not exceed --max-pixels (1000)"),
    ("ask --attn-implementation bogus", [*ASK, "--attn-implementation", "bogus"],
     "argument --attn-implementation: must be one of sdpa, eager, flash_attention_2"),
    ("stream --attn-implementation bogus", [*STREAM, "--attn-implementation", "bogus"],
     "argument --attn-implementation: must be one of sdpa, eager"),
    ("visualize --animation-fps nan", [*VISUALIZE, "--animation-fps", "nan"],
     "argument --animation-fps: must be a finite number, got 'nan'"),
    ("visualize gif --animation-fps 0.001", [*VISUALIZE, "--animation", "gif", "--animation-fps", "0.001"],
     "--animation-fps must be a number of overlays per second >= 0.002"),
    ("ask --model ''", [*ASK[:3], "--model", ""], "argument --model: is empty; pass a saved model directory or a Hugging Face id"),
    ("ask --model a video", [*ASK[:3], "--model", "{clip}"], "is a file; pass the model's directory"),
    ("ask --model with a broken config.json", [*ASK[:3], "--model", "{broken_config}"],
     "config.json' is not valid JSON (line 2 column 1"),
    ("ask --fps nan", [*ASK, "--fps", "nan"], "argument --fps: must be a finite number"),
    ("ask --max-new-tokens 0", [*ASK, "--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1"),
    ("ask --short-frames 1", [*ASK, "--short-frames", "1"], "short_frames=1 is less than one temporal grid step"),
    ("stream question time NaN", [*STREAM[:-1], "{q_nan}"], 'q_nan.jsonl:1: "time" must be a finite number of seconds >= 0, got nan'),
    ("stream question time 1e400", [*STREAM[:-1], "{q_huge}"], '"time" must be a finite number of seconds >= 0, got inf'),
    ("stream question not a string", [*STREAM[:-1], "{q_number}"], '"question" must be a string of text, got int 5'),
    ("stream --gamma 2", [*STREAM, "--gamma", "2"], "argument --gamma: is a fraction and must lie in [0, 1]"),
    ("demo --fps nan", [*DEMO, "--fps", "nan"], "argument --fps: must be a finite number, got 'nan'"),
    ("demo --fps inf", [*DEMO, "--fps", "inf"], "argument --fps: must be a finite number, got 'inf'"),
    ("demo --max-pixels 0", [*DEMO, "--max-pixels", "0"], "argument --max-pixels: must be a number of pixels >= 1"),
    ("demo --port 70000", [*DEMO, "--port", "70000"], "argument --port: must be a port number in 0..65535"),
    ("serve --encoder-device potato", [*SERVE, "--encoder-device", "potato"],
     "--encoder-device 'potato' is not a device; use auto, cpu, cuda, cuda:N or mps."),
    ("serve --port -5", [*SERVE, "--port", "-5"], "argument --port: must be a port number in 0..65535 (0: any free port), got '-5'"),
    ("serve --port 99999", [*SERVE, "--port", "99999"], "argument --port: must be a port number in 0..65535"),
    ("serve a video as model", ["serve", "{clip}", "--dry-run"], "argument model: '"),
    ("serve a broken model directory", ["serve", "{broken_config}", "--dry-run"], "config.json' is not valid JSON"),
    ("serve --short-frames 1", [*SERVE, "--short-frames", "1"], "short_frames=1 is less than one temporal grid step"),
    ("serve --direct-drop-sim 2", [*SERVE, "--direct-drop-sim", "2"], "argument --direct-drop-sim: is a cosine similarity in [-1, 1] (or none)"),
    ("serve --vllm-args unclosed quote", [*SERVE, "--vllm-args", '"unclosed'],
     "--vllm-args '\"unclosed' cannot be split into arguments (No closing quotation); check its quotes."),
    ("score --replies DIR", [*SCORE_OVO, "--replies", "{replies_dir}"], "replies.* is a directory; pass the JSON-lines file of replies"),
    ("score --replies empty", [*SCORE_OVO, "--replies", "{replies_empty}"], "holds no reply to any question of the annotations (0 records"),
    ("score --replies bad JSON", [*SCORE_OVO, "--replies", "{replies_bad_json}"], "holds no reply to any question of the annotations"),
    ("score --replies a questions file", [*SCORE_OVO, "--replies", "{replies_questions}"], "holds no reply to any question"),
    ("score --replies UTF-16", [*SCORE_OVO, "--replies", "{replies_utf16}"], "is UTF-16 encoded; save it as UTF-8"),
    ("score --replies not UTF-8", [*SCORE_OVO, "--replies", "{replies_latin1}"], "is not UTF-8 text (byte 26); save it as UTF-8"),
    ("score streamingbench --context nan", ["score", "streamingbench", "--annotations", "{ovo}", "--field", "x", "--out",
                                            "{root}/scores", "--context", "nan"], "argument --context: must be a finite number"),
    ("eval --videos FILE", ["eval", "ovobench", "--annotations", "{ovo}", "--videos", "{a_file}", "--out", "{root}/run",
                            "--dry-run"], "is a file; pass the directory the annotations' video paths are relative to"),
    ("train --max_steps 0", ["train", "--model", "{model}", "--datasets", "{train_data}", "--max_steps", "0"],
     "max_steps must be >= 1 (or -1: train num_train_epochs epochs), got 0"),
    ("train --max_pixels 10", ["train", "--model", "{model}", "--datasets", "{train_data}", "--max_pixels", "10"],
     "max_pixels 10 is less than one visual token"),
]


@pytest.mark.parametrize("case, argv, needle", BEFORE_LOADING, ids=[row[0] for row in BEFORE_LOADING])
def test_each_mistake_is_one_line_before_the_model_loads(files, capsys, no_model_load, case, argv, needle):
    import re

    code, err = _run(argv, files, capsys)
    assert code == 2, err
    line = _one_line(err, argv[0])
    assert needle in line or re.search(needle, line), line
    assert not (files["root"] / "scores" / "scores.json").exists()  # a failed score writes nothing


# a broken model directory is named for what it is, found before the weights load
MODEL_DIRECTORIES = [
    ("truncated", "weights file '.*model.safetensors' is damaged or incomplete \\(incomplete metadata, file not fully covered\\); copy or download it again"),
    ("no_processor", "holds no usable processor \\(preprocessor_config.json, tokenizer files\\); save it there"),
    ("broken_config", "config.json' is not valid JSON \\(line 2 column 1: .*\\); restore it from the original model"),
]


@pytest.mark.parametrize("model, pattern", MODEL_DIRECTORIES, ids=[row[0] for row in MODEL_DIRECTORIES])
def test_a_broken_model_directory_is_one_line_naming_the_real_problem(files, capsys, model, pattern):
    import re

    code, err = _run([*ASK[:3], "--model", f"{{{model}}}", "--max-new-tokens", "1", "--no-progress"], files, capsys)
    assert code == 2 and re.search(pattern, _one_line(err, "ask")), err


def test_a_count_of_frames_that_is_not_whole_grid_steps_gets_a_note_not_an_error(files, capsys):
    code = main([arg.format(**files) for arg in [*SERVE, "--short-frames", "3", "--medium-frames", "65"]])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.splitlines() == [
        "fluxmem serve: note: --short-frames 3 becomes 2 (1 grid step of 2 frames): the memory holds whole grid steps.",
        "fluxmem serve: note: --medium-frames 65 becomes 64 (32 grid steps of 2 frames): the memory holds whole grid steps.",
    ]


def test_serve_accepts_direct_drop_sim_none_its_documented_value(files, capsys):
    assert main([arg.format(**files) for arg in [*SERVE, "--direct-drop-sim", "none"]]) == 0
    command = capsys.readouterr().out
    assert '"direct_drop_sim": null' in command


def test_serve_without_vllm_names_the_install_command(files, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    code, err = _run(["serve", "{model}"], files, capsys)
    assert code == 2
    assert _one_line(err, "serve") == "fluxmem serve: error: vLLM is not installed; install the extra: pip install 'fluxmem-video[vllm]'."


def test_serve_with_a_partial_vllm_names_the_install_command(files, capsys, monkeypatch):
    import builtins
    import importlib.metadata
    import importlib.util

    real_find, real_import = importlib.util.find_spec, builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "vllm":
            raise importlib.metadata.PackageNotFoundError("vllm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real_find(name, *a))
    monkeypatch.setattr(builtins, "__import__", broken_import)
    code, err = _run(["serve", "{model}"], files, capsys)
    assert code == 2
    assert _one_line(err, "serve").endswith("install the extra: pip install 'fluxmem-video[vllm]'.")


def test_demo_port_0_serves_on_a_free_port_the_system_picks(files, capsys, monkeypatch):
    from fluxmem.cli import demo, options

    chosen = {}
    monkeypatch.setattr(options, "load", lambda args: (None, None))
    monkeypatch.setitem(__import__("sys").modules, "fluxmem.demo", _FakeDemoModule(chosen))
    assert main(["demo", "--model", str(files["model"]), "--port", "0"]) == 0
    assert 0 < chosen["port"] <= 65535
    assert f"FluxMem demo on http://127.0.0.1:{chosen['port']}/" in capsys.readouterr().out
    assert demo.check_port_free("127.0.0.1", 0) > 0


class _FakeDemoModule:
    """Stands for fluxmem.demo (Gradio) in the port test: records the port it is served on."""

    def __init__(self, chosen: dict) -> None:
        self.chosen = chosen

    def build_demo(self, *args, **kwargs):
        return self

    def serve(self, demo, *, host, port, block, quiet):
        self.chosen["port"] = port
        return f"http://{host}:{port}/"

    def block_thread(self):
        pass

    def close(self):
        pass


def test_serve_checks_the_encoder_device_is_here_unless_printing_a_command_for_elsewhere(files, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = _run(["serve", "{model}", "--encoder-device", "cuda:0"], files, capsys)
    assert code == 2
    assert "--encoder-device cuda:0: this machine has no CUDA GPU that torch can use" in _one_line(err, "serve")
    assert main([arg.format(**files) for arg in [*SERVE, "--encoder-device", "cuda:0"]]) == 0  # --dry-run
    assert '"device": "cuda:0"' in capsys.readouterr().out
