"""The README's first command ends in ``fluxmem quickstart``: the main job on the clip shipped
inside the package, with the default model, or, where its weights cannot be fetched, one line
saying so and the same job on the offline tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from fluxmem.cli import main
from fluxmem.video import decode_frames, probe_video
from fluxmem.video.sample import (
    SAMPLE_FPS,
    SAMPLE_HEIGHT,
    SAMPLE_QUESTION,
    SAMPLE_SECONDS,
    SAMPLE_WIDTH,
    SQUARE,
    sample_clip,
    sample_frames,
)

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "huggingface_hub")


def test_the_shipped_clip_shows_the_square_crossing_from_left_to_right():
    with sample_clip() as clip:
        assert clip.is_file() and clip.stat().st_size < 64_000
        info = probe_video(str(clip))
        decoded = decode_frames(str(clip), list(range(info.num_frames))).frames
    assert (info.num_frames, info.fps, info.width, info.height) == (SAMPLE_SECONDS * SAMPLE_FPS, SAMPLE_FPS,
                                                                    SAMPLE_WIDTH, SAMPLE_HEIGHT)
    drawn = sample_frames()
    decoded = np.asarray(decoded).transpose(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]
    # H.264 is lossy (4:2:0 colour, quantisation): close to the drawn frames, not equal
    assert np.abs(decoded.astype(int) - drawn).mean() < 3
    red = (decoded[..., 0] > 150) & (decoded[..., 1] < 100) & (decoded[..., 2] < 100)
    centres = [np.nonzero(frame.any(axis=0))[0].mean() for frame in red]
    expected = np.linspace(0, SAMPLE_WIDTH - SQUARE, len(drawn)).round() + (SQUARE - 1) / 2
    assert np.abs(np.array(centres) - expected).max() <= 2  # chroma subsampling blurs an edge by a pixel or two


def _quickstart_lines(out: str) -> dict[str, str]:
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["clip", "question", "model", "answer"], out
    assert lines[4].startswith("[memory] fluxmem: visual tokens ") and len(lines) == 5, out
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in lines[:4]} | {"memory": lines[4]}


def _kept_and_total(memory_line: str) -> tuple[int, int]:
    total, kept = memory_line.removeprefix("[memory] fluxmem: visual tokens ").split(" (")[0].split(" -> ")
    return int(kept), int(total)


def test_offline_quickstart_runs_the_main_job_on_the_tiny_model(capsys):
    assert main(["quickstart", "--offline", "--max-new-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # asked for: nothing to explain
    shown = _quickstart_lines(captured.out)
    assert shown["clip"] == "sample.mp4, 20 s, 336x224, shipped with fluxmem"
    assert shown["question"] == SAMPLE_QUESTION
    assert shown["model"] == "the offline tiny Qwen2.5-VL of fluxmem.testing, FluxMem on"
    assert shown["answer"].startswith("(3 tokens of noise")
    kept, total = _kept_and_total(shown["memory"])
    assert 0 < kept < total  # the memory ran and dropped repeated tokens


def test_without_the_hub_it_says_so_in_one_line_and_runs_the_same_job(monkeypatch, capsys):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    assert main(["quickstart", "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "fluxmem quickstart: cannot fetch Qwen/Qwen2.5-VL-7B-Instruct (the Hugging Face Hub is unreachable: "
        "[Errno -2] Name or service not known); running the same job on the offline tiny Qwen2.5-VL of "
        "fluxmem.testing (random weights: its answer is noise).\n"
    )
    assert _quickstart_lines(captured.out)["model"].startswith("the offline tiny Qwen2.5-VL")


def test_the_command_as_a_user_runs_it_with_hf_hub_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache
    run = subprocess.run([sys.executable, "-m", "fluxmem.cli", "quickstart", "--max-new-tokens", "2"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("fluxmem quickstart: cannot fetch Qwen/Qwen2.5-VL-7B-Instruct (HF_HUB_OFFLINE is set")
    assert run.stderr.count("\n") == 1, run.stderr
    assert _kept_and_total(_quickstart_lines(run.stdout)["memory"])[0] > 0


def test_quickstart_help_loads_neither_torch_nor_the_hub():
    code = ("import sys\nfrom fluxmem.cli import main\ntry:\n    main(['quickstart', '--help'])\nexcept SystemExit:\n"
            f"    pass\nprint('LOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "LOADED []"


def test_the_readme_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["# fluxmem", ""] and lines[2] == "```bash", lines[:3]
    block = lines[3:lines.index("```", 3)]
    assert len(block) == 2, block
    assert block[0].startswith("bash scripts/setup.sh ") and block[0].endswith("fluxmem quickstart")
    assert block[1].startswith("bash scripts/setup.sh dev ") and block[1].endswith("pytest -q")
    assert "awk '/^```/ { block++; next } block == 1' README.md | sed -n 2p" in (REPO / ".ci" / "run").read_text()


def test_a_model_that_loads_answers_in_its_own_words(tiny_model_dir, capsys):
    assert main(["quickstart", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == f"fluxmem quickstart: loading {tiny_model_dir}"
    shown = _quickstart_lines(captured.out)
    assert shown["model"] == f"{tiny_model_dir}, FluxMem on"
    assert "tokens of noise" not in shown["answer"]  # the model's own text, whatever it is


def test_a_download_that_breaks_off_is_one_line_and_the_job_still_runs(monkeypatch, capsys):
    from fluxmem import loading
    from fluxmem.cli import quickstart

    def broken(*args, **kwargs):
        raise OSError("Connection broken: IncompleteRead(0 bytes read)\nmore detail")

    monkeypatch.setattr(quickstart, "fetch_problem", lambda model: None)
    monkeypatch.setattr(loading, "load_model", broken)
    assert main(["quickstart", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("fluxmem quickstart: loading Qwen/Qwen2.5-VL-7B-Instruct")
    assert err[1].startswith("fluxmem quickstart: cannot fetch Qwen/Qwen2.5-VL-7B-Instruct (the download failed: "
                             "Connection broken: IncompleteRead(0 bytes read)); running the same job")


def test_a_model_that_is_neither_a_directory_nor_a_hub_id_is_one_line(tmp_path, capsys):
    assert main(["quickstart", "--model", str(tmp_path / "missing" / "model" / "dir")]) == 2
    assert capsys.readouterr().err == (
        f"fluxmem quickstart: error: --model '{tmp_path}/missing/model/dir' is neither a local directory nor a "
        "Hugging Face id; pass a saved model directory or a Hub id such as Qwen/Qwen2.5-VL-7B-Instruct.\n")
