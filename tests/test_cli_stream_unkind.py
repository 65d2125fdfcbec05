"""``fluxmem stream`` on unkind videos: a two-minute still or black video answers the end-of-stream
question; a video whose frames no processor can size (8x2000) is one line and exit 2, never a
traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fluxmem.cli import main
from fluxmem.testing import build_tiny_qwen2_5_vl, write_video


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-unkind")
    build_tiny_qwen2_5_vl(save_dir=root / "model")
    (root / "q.jsonl").write_text(json.dumps({"time": 999, "question": "What happened?"}) + "\n")
    return root


def stream(root, video, capsys, *extra):
    out = root / f"{video.stem}.jsonl"
    code = main(["stream", str(video), "--model", str(root / "model"), "--questions", str(root / "q.jsonl"),
                 "--out", str(out), "--no-progress", "--max-new-tokens", "3", *extra])  # fmt: skip
    return code, out, capsys.readouterr().err


@pytest.mark.parametrize("value", [96, 0])
def test_a_two_minute_still_or_black_video_answers_the_end_of_stream_question(workspace, capsys, value):
    """Default memory settings (short 8, medium 64 frames) at 1 fps: the first frame to turn
    long-term (after 73 s) keeps no token; the stream goes on to the end."""
    frames = np.full((120, 56, 56, 3), value, dtype=np.uint8)
    video = write_video(workspace / f"still-{value}.mp4", frames, fps=1.0)
    code, out, err = stream(workspace, video, capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["question"] for line in lines] == ["What happened?"]
    assert lines[0]["memory"]["steps"] == 60 and lines[0]["memory"]["tiers"]["long"]["frames"] >= 20
    assert lines[0]["memory"]["tiers"]["long"]["kept"] == 0  # the case that stopped the session
    assert "Traceback" not in err


@pytest.mark.parametrize("shape", [(8, 2000), (2000, 8)])
def test_a_video_no_processor_can_size_is_one_line(workspace, capsys, shape):
    frames = np.full((4, *shape, 3), 128, dtype=np.uint8)
    video = write_video(workspace / f"thin-{shape[0]}x{shape[1]}.mp4", frames, fps=2.0)
    code, out, err = stream(workspace, video, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # (transformers' loading bar aside)
    assert len(errors) == 1 and errors[0].startswith(f"fluxmem stream: error: {video}: a {shape[0]}x{shape[1]} frame"), err
    assert "aspect ratio" in errors[0] and "Traceback" not in err
    assert not out.exists() or out.read_text() == ""
