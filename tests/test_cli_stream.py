"""``fluxmem stream``: answers as JSON lines, equal to a session fed the same frames; clean ends."""

from __future__ import annotations

import json

import pytest

from fluxmem.cli import main
from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames, write_video
from fluxmem.video import open_source

MEMORY_ARGS = ["--short-frames", "4", "--medium-frames", "8", "--max-new-tokens", "5", "--fps", "2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    model, processor = build_tiny_qwen2_5_vl(save_dir=root / "model")
    video = write_video(root / "clip.mp4", moving_square_frames(16), fps=2.0)
    return root, model, processor, video


def write_questions(path, items):
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answers_are_written_as_json_lines_equal_to_the_session(workspace):
    root, model, processor, video = workspace
    questions = write_questions(root / "q.jsonl", [
        {"time": 5.2, "question": "What is moving?"},
        {"time": 0.0, "question": "What color is the square?"},
        {"time": 99, "question": "What happened?"},  # after the end: asked at the end
    ])
    out = root / "answers.jsonl"
    code = main(["stream", str(video), "--model", str(root / "model"), "--questions", str(questions), "--out", str(out),
                 *MEMORY_ARGS])
    assert code == 0
    lines = read_lines(out)
    assert [line["question"] for line in lines] == ["What color is the square?", "What is moving?", "What happened?"]
    assert [line["stream_time"] for line in lines] == [0.0, 5.0, 7.5]
    assert all({"time", "question", "answer", "latency_ms", "memory"} <= set(line) for line in lines)

    # the same answers as a session fed the decoded frames directly
    session = StreamSession(model, processor, fps=2.0, short_frames=4, medium_frames=8)
    expected, pending = [], [(0.0, "What color is the square?"), (5.2, "What is moving?")]
    with open_source(str(video)) as source:
        for frame, timestamp in source:
            while pending and pending[0][0] < timestamp:
                expected.append(session.ask(pending.pop(0)[1], max_new_tokens=5).text)
            session.push(frame, timestamp)
    expected.append(session.ask("What happened?", max_new_tokens=5).text)
    assert [line["answer"] for line in lines] == expected
    assert lines[-1]["memory"]["steps"] == 8


def test_proactive_events_with_a_standing_instruction(workspace):
    root, _, _, video = workspace
    out = root / "events.jsonl"
    code = main(["stream", str(video), "--model", str(root / "model"), "--proactive", "--gamma", "0",
                 "--instruction", "Describe the scene.", "--out", str(out), *MEMORY_ARGS])
    assert code == 0
    lines = read_lines(out)
    assert len(lines) == 7  # every grid step after the first changes a little (gamma 0)
    assert all(line["event"] == "scene_change" and line["question"] == "Describe the scene." for line in lines)
    assert all(line["change_fraction"] > 0 for line in lines)


class _FailingSource:
    """Six frames at 2 fps, then the connection drops (what a network source raises)."""

    def __init__(self, *args, **kwargs):
        self._frames = iter(moving_square_frames(6))
        self._count = 0

    def __iter__(self):
        return self

    def __next__(self):
        from fluxmem import VideoError

        if self._count == 6:
            raise VideoError("connection reset by peer")
        self._count += 1
        return next(self._frames), (self._count - 1) / 2.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_a_stream_failing_midway_ends_cleanly_with_the_answers_kept(workspace, monkeypatch):
    import fluxmem.video

    root, _, _, _ = workspace
    monkeypatch.setattr(fluxmem.video, "open_source", _FailingSource)
    questions = write_questions(root / "q2.jsonl", [{"time": 1.0, "question": "What is moving?"},
                                                    {"time": 50.0, "question": "And now?"}])
    out = root / "broken.jsonl"
    code = main(["stream", "rtsp://camera.invalid/live", "--model", str(root / "model"), "--questions", str(questions),
                 "--out", str(out), *MEMORY_ARGS])
    assert code == 0
    lines = read_lines(out)
    assert [line["question"] for line in lines] == ["What is moving?", "And now?"]
    assert [line["stream_time"] for line in lines] == [1.0, 2.5]
    assert lines[-1]["memory"]["steps"] == 3


@pytest.mark.parametrize("case", ["unopenable", "empty question", "bad json", "nothing to do"])
def test_bad_input_is_one_line_and_exit_code_2(workspace, case, capsys):
    root, _, _, video = workspace
    source, questions = str(video), root / f"{case}.jsonl"
    if case == "unopenable":
        source = str(root / "missing.mp4")
        write_questions(questions, [{"time": 1, "question": "What?"}])
    elif case == "empty question":
        write_questions(questions, [{"time": 1, "question": "What?"}, {"time": 2, "question": "  "}])
    elif case == "bad json":
        questions.write_text('{"time": 1, "question": "What?"}\n{"time": 2,\n')
    argv = ["stream", source, "--model", str(root / "model"), *MEMORY_ARGS]
    if case != "nothing to do":
        argv += ["--questions", str(questions)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fluxmem stream: error:") and "\n" not in error
    if case in ("empty question", "bad json"):
        assert f"{questions}:2" in error


def test_stream_needs_a_model_or_a_server(tmp_path, capsys):
    from fluxmem.cli import main

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"time": 1, "question": "What is moving?"}\n')
    assert main(["stream", "clip.mp4", "--questions", str(questions)]) == 2
    assert "pass --model MODEL (or --server URL" in capsys.readouterr().err
    assert main(["stream", "clip.mp4", "--questions", str(questions), "--server", "http://127.0.0.1:9", "--history"]) == 2
    assert "local-session options; drop them with --server" in capsys.readouterr().err


def test_another_memory_method_streams_as_its_session_and_a_budget_is_refused(workspace, capsys):
    root, model, processor, video = workspace
    questions = write_questions(root / "q-recent.jsonl", [{"time": 99, "question": "What is moving?"}])
    out = root / "answers-recent.jsonl"
    code = main(["stream", str(video), "--model", str(root / "model"), "--questions", str(questions), "--out", str(out),
                 "--memory", "recent:4", "--max-new-tokens", "5", "--fps", "2", "--no-progress"])
    assert code == 0
    (line,) = read_lines(out)
    session = StreamSession(model, processor, fps=2.0, memory="recent:4")
    with open_source(str(video)) as source:
        for frame, timestamp in source:
            session.push(frame, timestamp)
    assert line["answer"] == session.ask("What is moving?", max_new_tokens=5).text
    assert (line["memory"]["method"], line["memory"]["kept"], line["memory"]["tiers"]) == ("recent:4", 2 * 16, None)
    capsys.readouterr()
    for extra, words in [(["--budget", "0.5"], "a live stream never has"), (["--memory", "evs"], "cannot run in a streaming session")]:
        assert main(["stream", str(video), "--model", str(root / "model"), "--questions", str(questions), *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("fluxmem stream: error:") and words in error and "\n" not in error
