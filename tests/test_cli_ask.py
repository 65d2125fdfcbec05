"""`fluxmem ask`: the main job end to end on the tiny model, and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from fluxmem.cli import main


def run_cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "fluxmem", *args], capture_output=True, text=True, env=env)


def test_ask_prints_answer_and_memory_line(tiny_model_dir, square_clip, capsys):
    code = main(["ask", str(square_clip), "What is moving?", "--model", str(tiny_model_dir), "--fps", "2",
                 "--short-frames", "4", "--medium-frames", "4", "--max-new-tokens", "5", "--no-progress",
                 "--min-pixels", "3136", "--max-pixels", "25088"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    memory_line = out[-1]
    # 8 grid steps x 4 x 8 cells
    assert memory_line.startswith("[memory] fluxmem:short_frames=4,medium_frames=4: visual tokens 256 -> ")
    assert "short 64/64" in memory_line and "mid " in memory_line and "long " in memory_line


def test_ask_with_another_memory_method_and_a_budget(tiny_model_dir, square_clip, capsys):
    code = main(["ask", str(square_clip), "What is moving?", "--model", str(tiny_model_dir), "--fps", "2",
                 "--memory", "evs", "--budget", "0.25", "--max-new-tokens", "3", "--json", "--no-progress",
                 "--min-pixels", "3136", "--max-pixels", "25088"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    memory = result["memory"]
    assert (memory["method"], memory["budget"], memory["tokens"], memory["target"], memory["kept"]) == (
        "evs:0.75", "0.25", 256, 64, 64)
    assert memory["tiers"] is None


def test_ask_json_and_baseline(tiny_model_dir, square_clip, capsys):
    code = main(["ask", str(square_clip), "What is moving?", "--model", str(tiny_model_dir), "--fps", "2",
                 "--no-fluxmem", "--max-new-tokens", "3", "--json", "--no-progress"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and isinstance(result["answer"], str)
    assert result["memory"]["videos"] == 0  # the memory stayed off


@pytest.mark.parametrize(
    "args,message",
    [
        (["{clip_dir}/missing.mp4", "q"], "not found"),
        (["{clip}", "q", "--short-frames", "1"], "less than one temporal grid step"),
        (["{clip}", "q", "--short-frames", "-4"], "must be >= 0"),
        (["{clip}", "   "], "question is empty"),
        (["{clip}", "q", "--fps", "0"], "fps must be > 0"),
        (["{clip}", "q", "--memory", "nope"], "unknown memory method 'nope'"),
        (["{clip}", "q", "--memory", "evs", "--short-frames", "4"], "--memory evs does not take them"),
        (["{clip}", "q", "--budget", "2.5"], "fraction must lie in (0, 1]"),
    ],
)
def test_ask_bad_input_is_one_clear_line(tiny_model_dir, square_clip, args, message, capsys):
    args = [a.format(clip=square_clip, clip_dir=square_clip.parent) for a in args]
    assert main(["ask", *args, "--model", str(tiny_model_dir)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("fluxmem ask: error:") and message in last


def test_ask_unknown_model_directory_in_a_real_process(square_clip, tmp_path):
    result = run_cli("ask", str(square_clip), "q", "--model", str(tmp_path / "nope"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
