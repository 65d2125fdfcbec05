"""Outputs never destroy inputs, are written whole, and belong to one run at a time.

``fluxmem.outputs`` on its own (paths, locks, atomic writes, record files), then every command's
output option on the cases a user met: each is one line, exit status 2, and every input file is
byte for byte what it was (hashed before and after). The checks come before any model loads: the
models here are folders with a ``config.json`` and weights that no loader could read, so a command
that reached the loader would fail differently.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fluxmem.cli import main
from fluxmem.errors import OutputError
from fluxmem.outputs import (
    RecordFile,
    append_line,
    atomic_dir,
    atomic_file,
    check_output,
    claim_output,
    lock_path,
    write_text,
)
from fluxmem.testing import moving_square_frames, write_video


# ------------------------------------------------------------------------------ helpers
def _digest(*paths) -> dict[str, str]:
    """sha256 of every file under the given files and folders."""
    found = {}
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            found[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"fluxmem {command}: error: "), err
    return err


def _fake_model(path: Path) -> Path:
    """A model folder a user may point --model at; its weights are not loadable on purpose."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (path / "model.safetensors").write_bytes(b"\x00weights" * 64)
    return path


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A user's working folder: a clip, questions, a model; the tests run inside it."""
    write_video(tmp_path / "clip.mp4", moving_square_frames(4), fps=2.0)
    (tmp_path / "q.jsonl").write_text(json.dumps({"time": 0, "question": "What is there?"}) + "\n")
    _fake_model(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _hold_lock(path, *, kind: str, pid: int = 4242, command: str = "fluxmem stream clip.mp4 --out same.jsonl"):
    """Hold an output's lock as another run would (flock on its lock file, its name written in)."""
    lock = lock_path(path, kind=kind)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": pid, "started": "2026-12-03 12:00:00 UTC", "command": command}).encode())
    return fd


@pytest.fixture
def read_only(tmp_path):
    """A folder no one may write in, root included (chmod for users, the immutable flag for root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "old.txt").write_text("kept")
    folder.chmod(0o555)
    immutable = False
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        pass
    else:  # root writes through permissions
        (folder / ".probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


# ------------------------------------------------------------------------------ check_output
@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("path", ["", "   "])
def test_an_empty_path_is_not_the_working_directory(path, kind):
    with pytest.raises(OutputError, match=r"^--out is empty \(an empty path is not the working directory\)"):
        check_output(path, kind=kind)


def test_an_output_that_is_an_input_is_refused_however_it_is_spelled(work):
    inputs = {"video": "clip.mp4", "questions file": str(work / "q.jsonl")}
    (work / "sub").mkdir()
    os.symlink(work / "clip.mp4", work / "link.mp4")
    os.link(work / "q.jsonl", work / "hard.jsonl")
    for spelled, name in [("clip.mp4", "video 'clip.mp4'"), ("./clip.mp4", "video 'clip.mp4'"),
                          (str(work / "clip.mp4"), "video 'clip.mp4'"), ("sub/../clip.mp4", "video 'clip.mp4'"),
                          ("link.mp4", "video 'clip.mp4'"), ("hard.jsonl", f"questions file {str(work / 'q.jsonl')!r}"),
                          ("q.jsonl", f"questions file {str(work / 'q.jsonl')!r}")]:
        with pytest.raises(OutputError) as error:
            check_output(spelled, inputs=inputs)
        assert str(error.value) == f"--out {spelled!r} is the {name}; writing there would destroy it: pick another path."
    assert check_output("answers.jsonl", inputs=inputs) == Path("answers.jsonl")


def test_nothing_is_written_inside_an_input_directory(work):
    with pytest.raises(OutputError, match=r"^--out 'model/config.json' lies inside the model 'model'; writing there"):
        check_output("model/config.json", inputs={"model": "model"})
    with pytest.raises(OutputError, match=r"^--out 'model/runs' lies inside the model 'model'"):
        check_output("model/runs", kind="dir", inputs={"model": "model"})
    with pytest.raises(OutputError, match=r"^--out 'model' is the model 'model'"):
        check_output("model", kind="dir", inputs={"model": "model"})
    # a folder that only holds inputs (the benchmark's videos) may hold the output
    (work / "videos").mkdir()
    assert check_output("videos/run", kind="dir", folders={"video folder": "videos"}) == Path("videos/run")
    with pytest.raises(OutputError, match=r"^--out 'videos' is the video folder 'videos'"):
        check_output("videos", kind="dir", folders={"video folder": "videos"})


def test_an_output_folder_may_hold_inputs_only_where_it_writes_nothing(work):
    (work / "out").mkdir()
    (work / "out" / "memory.mp4").write_bytes(b"video")
    inputs = {"video": "out/memory.mp4"}
    with pytest.raises(OutputError, match=r"^--out 'out' holds the video 'out/memory.mp4' as 'memory.mp4', which the run writes"):
        check_output("out", kind="dir", inputs=inputs, writes=("memory.mp4", "overlays/"))
    assert check_output("out", kind="dir", inputs=inputs, writes=("memory.gif", "overlays/")) == Path("out")
    (work / "out" / "overlays").mkdir()
    (work / "out" / "overlays" / "x.png").write_bytes(b"png")
    with pytest.raises(OutputError, match="as 'overlays'"):
        check_output("out", kind="dir", inputs={"picture": "out/overlays/x.png"}, writes=("overlays/",))
    with pytest.raises(OutputError, match=r"holds the video 'out/memory.mp4', and the run writes into that folder"):
        check_output("out", kind="dir", inputs=inputs, writes=None)  # unknown names: any input inside is refused


def test_inputs_that_are_not_on_this_disk_are_passed_over(work):
    inputs = {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "video": ["rtsp://camera/stream", "0", None, ""]}
    assert check_output("answers.jsonl", inputs=inputs) == Path("answers.jsonl")


def test_a_file_where_a_folder_is_needed_and_the_reverse(work):
    with pytest.raises(OutputError, match=r"^--out 'model' is a directory; give a file name for the answers, e.g."):
        check_output("model", what="answers")
    with pytest.raises(OutputError, match=r"^--out 'q.jsonl' is a file; the pictures go into a folder"):
        check_output("q.jsonl", kind="dir", what="pictures")
    with pytest.raises(OutputError, match=r"^--out 'q.jsonl/x': '.*/q.jsonl' is a file, so the folder cannot be made"):
        check_output("q.jsonl/x", kind="dir")
    with pytest.raises(OutputError, match=r"the folder 'no/such' does not exist"):
        check_output("no/such/answers.jsonl")


def test_a_read_only_location_is_refused(read_only):
    for path, kind in [(read_only / "answers.jsonl", "file"), (read_only, "dir"), (read_only / "new" / "deeper", "dir")]:
        with pytest.raises(OutputError, match=r"cannot be written \((read-only file system|permission denied|operation not permitted)"):
            check_output(path, kind=kind)
    assert not (read_only / "new").exists()


# ------------------------------------------------------------------------------ locks
def test_a_second_run_on_an_output_refuses_naming_the_first(tmp_path):
    out = tmp_path / "answers.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.argv = ["fluxmem", "stream", "clip.mp4", "--out", {str(out)!r}]
            from fluxmem.outputs import claim_output
            with claim_output({str(out)!r}):
                print("held", flush=True)
                sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError) as error:
            with claim_output(out):
                pass
        message = str(error.value)
        assert message.startswith(f"--out {str(out)!r} is being written by another run (pid {holder.pid}, started 20")
        assert message.endswith(f": fluxmem stream clip.mp4 --out {out}); wait for it to end or pick another path.")
    finally:
        holder.communicate("done\n", timeout=30)
    with claim_output(out):  # released when the first run ended
        pass
    assert not lock_path(out).exists()  # no lock file left behind


def test_a_run_may_nest_claims_on_its_own_output_and_locks_by_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with claim_output("runs", kind="dir") as out:
        with claim_output(tmp_path / "runs", kind="dir"):
            assert (out / ".fluxmem.lock").exists()
        assert (out / ".fluxmem.lock").exists()  # still held by the outer claim
    assert not (tmp_path / "runs" / ".fluxmem.lock").exists()
    os.symlink(tmp_path / "runs", tmp_path / "alias")
    fd = _hold_lock(tmp_path / "runs", kind="dir", command="fluxmem eval ovobench --out runs")
    try:
        with pytest.raises(OutputError, match=r"^--out 'alias' is being written by another run \(pid 4242, .*: fluxmem eval ovobench --out runs\)"):
            with claim_output("alias", kind="dir"):
                pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ atomic writes
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as temporary:
            assert temporary.parent == tmp_path and temporary.suffix == ".json" and temporary != target
            temporary.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "merged"
    with atomic_dir(target) as temporary:
        (temporary / "config.json").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as temporary:
            (temporary / "config.json").write_text("2")
            raise RuntimeError("crash while saving")
    assert (target / "config.json").read_text() == "1"
    with atomic_dir(target) as temporary:
        (temporary / "weights.bin").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_record_files_never_show_a_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')  # a crash in the middle of a line
    append_line(path, '{"d": 4}')
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n{"d": 4}\n'
    with RecordFile(path) as records:  # resume: the file is kept, a torn tail dropped
        records.append('{"e": 5}\n')
    assert path.read_text().splitlines()[-1] == '{"e": 5}'
    with RecordFile(path, fresh=True) as records:  # a new run starts an empty file
        records.append('{"f": 6}')
        real_write = os.write

        def full_disk(fd, data):  # half the line goes out, then the disk is full
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full_disk)
        with pytest.raises(OSError):
            records.append('{"g": "a long line that does not fit"}')
        monkeypatch.undo()
    assert path.read_text() == '{"f": 6}\n'
    path.write_text("no newline at all")
    append_line(path, "{}")
    assert path.read_text() == "{}\n"


# ------------------------------------------------------------------------------ commands
def _stream(out, *extra):
    return ["stream", "clip.mp4", "--questions", "q.jsonl", "--model", "model", "--out", out, *extra]


@pytest.mark.parametrize(
    "out, message",
    [
        ("clip.mp4", "--out 'clip.mp4' is the video 'clip.mp4'; writing there would destroy it: pick another path."),
        ("./clip.mp4", "--out './clip.mp4' is the video 'clip.mp4'; writing there would destroy it: pick another path."),
        ("q.jsonl", "--out 'q.jsonl' is the questions file 'q.jsonl'; writing there would destroy it: pick another path."),
        ("model/config.json", "--out 'model/config.json' lies inside the model 'model'; writing there would change it: "
                              "pick a path outside it."),
        ("", "--out is empty (an empty path is not the working directory); give a file name for the answers."),
    ],
)
def test_stream_never_writes_over_its_inputs(work, capsys, out, message):
    before = _digest(work)
    assert main(_stream(out)) == 2
    assert _one_error_line(capsys, "stream") == f"fluxmem stream: error: {message}"
    assert _digest(work) == before


def test_two_streams_on_one_output_the_second_refuses(work, capsys):
    (work / "same.jsonl").write_text('{"answer": "first run"}\n')
    fd = _hold_lock(work / "same.jsonl", kind="file")
    try:
        before = _digest(work)
        assert main(_stream("same.jsonl")) == 2
    finally:
        os.close(fd)
    assert _one_error_line(capsys, "stream") == (
        "fluxmem stream: error: --out 'same.jsonl' is being written by another run (pid 4242, started 2026-12-03 "
        "12:00:00 UTC: fluxmem stream clip.mp4 --out same.jsonl); wait for it to end or pick another path.")
    assert _digest(work) == before


def test_stream_to_a_read_only_folder_fails_before_the_model_loads(work, read_only, capsys):
    assert main(_stream(str(read_only / "answers.jsonl"))) == 2
    assert "cannot be written" in _one_error_line(capsys, "stream")


def test_stream_writes_whole_lines_and_releases_its_output(work, tiny_model_dir):
    assert main(["stream", "clip.mp4", "--questions", "q.jsonl", "--model", str(tiny_model_dir), "--out", "a.jsonl",
                 "--max-new-tokens", "2", "--no-progress"]) == 0
    lines = (work / "a.jsonl").read_text().splitlines()
    assert [json.loads(line)["question"] for line in lines] == ["What is there?"]
    assert sorted(p.name for p in work.iterdir()) == ["a.jsonl", "clip.mp4", "model", "q.jsonl"]


@pytest.mark.parametrize("animation", ["mp4", "gif"])
def test_visualize_never_writes_over_its_video(work, capsys, animation):
    (work / "out").mkdir()
    video = work / "out" / f"memory.{animation}"
    os.replace(work / "clip.mp4", video)
    before = _digest(work)
    assert main(["visualize", str(video.relative_to(work)), "--model", "model", "--out", "out",
                 "--animation", animation]) == 2
    assert _one_error_line(capsys, "visualize") == (
        f"fluxmem visualize: error: --out 'out' holds the video 'out/memory.{animation}' as 'memory.{animation}', "
        "which the run writes: pick another folder or move the input out of it.")
    assert _digest(work) == before


@pytest.mark.parametrize(
    "out, message",
    [
        ("", "--out is empty (an empty path is not the working directory); give a folder path for the pictures."),
        ("model", "--out 'model' is the model 'model'; writing there would destroy it: pick another path."),
        ("model/pictures", "--out 'model/pictures' lies inside the model 'model'; writing there would change it: "
                           "pick a path outside it."),
    ],
)
def test_visualize_out_is_checked_before_the_model_loads(work, capsys, out, message):
    before = _digest(work)
    assert main(["visualize", "clip.mp4", "--model", "model", "--out", out]) == 2
    assert _one_error_line(capsys, "visualize") == f"fluxmem visualize: error: {message}"
    assert _digest(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["clip.mp4", "model", "q.jsonl"]


def test_visualize_to_a_read_only_folder(work, read_only, capsys):
    assert main(["visualize", "clip.mp4", "--model", "model", "--out", str(read_only)]) == 2
    assert "cannot be written" in _one_error_line(capsys, "visualize")


@pytest.fixture
def ovo(work):
    from fluxmem.eval.synthetic import write_ovobench_fixture

    return write_ovobench_fixture(work / "ovo")


def test_score_never_writes_over_its_replies(work, ovo, capsys):
    (work / "s").mkdir()
    (work / "s" / "scores.json").write_text(json.dumps({"id": 0, "response": "A"}) + "\n")
    before = _digest(work)
    assert main(["score", "ovobench", "--annotations", str(ovo["annotations"]), "--replies", "s/scores.json",
                 "--out", "s"]) == 2
    assert _one_error_line(capsys, "score") == (
        "fluxmem score: error: --out 's' holds the replies 's/scores.json' as 'scores.json', which the run writes: "
        "pick another folder or move the input out of it.")
    assert _digest(work) == before


def test_score_to_a_read_only_folder_and_while_a_run_writes_it(work, ovo, read_only, capsys):
    replies = work / "replies.jsonl"
    replies.write_text(json.dumps({"id": 0, "response": "A"}) + "\n")
    assert main(["score", "ovobench", "--annotations", str(ovo["annotations"]), "--replies", str(replies),
                 "--out", str(read_only)]) == 2
    assert "cannot be written" in _one_error_line(capsys, "score")
    run = work / "run"
    run.mkdir()
    (run / "answers.jsonl").write_text("")
    fd = _hold_lock(run, kind="dir", command="fluxmem eval ovobench --out run")
    try:
        assert main(["score", "run"]) == 2
    finally:
        os.close(fd)
    assert "is being written by another run (pid 4242" in _one_error_line(capsys, "score")


def _eval(ovo, out, *extra):
    return ["eval", "ovobench", "--annotations", str(ovo["annotations"]), "--videos", str(ovo["videos"]),
            "--out", out, *extra]


@pytest.mark.parametrize("dry_run", [True, False])
def test_eval_out_is_checked_before_anything_runs(work, ovo, capsys, dry_run):
    extra = ["--dry-run"] if dry_run else ["--model", "model"]
    before = _digest(work)
    cases = [
        ("", "--out is empty (an empty path is not the working directory); give a folder path for the results."),
        (str(ovo["videos"]), f"--out {str(ovo['videos'])!r} is the video folder {str(ovo['videos'])!r}; writing there "
                             "would destroy it: pick another path."),
    ]
    if not dry_run:
        cases.append(("model/eval", "--out 'model/eval' lies inside the model 'model'; writing there would change "
                                    "it: pick a path outside it."))
    for out, message in cases:
        assert main(_eval(ovo, out, *extra)) == 2
        assert _one_error_line(capsys, "eval") == f"fluxmem eval: error: {message}"
    assert _digest(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["clip.mp4", "model", "ovo", "q.jsonl"]


@pytest.mark.parametrize("dry_run", [True, False])
def test_two_evals_on_one_out_the_second_refuses(work, ovo, capsys, dry_run):
    fd = _hold_lock(work / "run", kind="dir", command="fluxmem eval ovobench --out run")
    try:
        assert main(_eval(ovo, "run", *(["--dry-run"] if dry_run else ["--model", "model"]))) == 2
    finally:
        os.close(fd)
    assert _one_error_line(capsys, "eval") == (
        "fluxmem eval: error: --out 'run' is being written by another run (pid 4242, started 2026-12-03 12:00:00 "
        "UTC: fluxmem eval ovobench --out run); wait for it to end or pick another path.")
    assert sorted(p.name for p in (work / "run").iterdir()) == [".fluxmem.lock"]  # the holder's file alone


@pytest.mark.parametrize("dry_run", [True, False])
def test_eval_to_a_read_only_folder(work, ovo, read_only, capsys, dry_run):
    assert main(_eval(ovo, str(read_only / "run"), *(["--dry-run"] if dry_run else ["--model", "model"]))) == 2
    assert "cannot be written" in _one_error_line(capsys, "eval")


def test_eval_dry_run_writes_its_files_whole_and_leaves_no_lock(work, ovo, capsys):
    assert main(_eval(ovo, "run", "--dry-run")) == 0
    assert sorted(p.name for p in (work / "run").iterdir()) == ["dry_run.json", "queries.jsonl"]


def _train(*extra):
    return ["train", "--model", "model", "--datasets", "[data.jsonl]", *extra]


@pytest.mark.parametrize(
    "output_dir, message",
    [
        ("model", "output_dir 'model' is the model 'model'; writing there would destroy it: pick another path."),
        ("model/sft", "output_dir 'model/sft' lies inside the model 'model'; writing there would change it: "
                      "pick a path outside it."),
        ("data.jsonl", "output_dir 'data.jsonl' is a file; the model and checkpoints go into a folder: pass a folder "
                       "path (created if missing)."),
        ("", "output_dir cannot be empty (null)."),  # refused by the settings already
    ],
)
def test_train_never_writes_over_its_base_model_or_data(work, capsys, output_dir, message):
    (work / "data.jsonl").write_text(json.dumps({"video": "clip.mp4", "conversations": []}) + "\n")
    before = _digest(work)
    assert main(_train("--output-dir", output_dir)) == 2
    assert _one_error_line(capsys, "train") == f"fluxmem train: error: {message}"
    assert _digest(work) == before


def test_train_refuses_an_output_folder_holding_its_data_or_read_only(work, read_only, capsys):
    (work / "runs").mkdir()
    (work / "runs" / "data.jsonl").write_text("{}\n")
    assert main(["train", "--model", "model", "--datasets", "[runs/data.jsonl]", "--output-dir", "runs"]) == 2
    assert _one_error_line(capsys, "train") == (
        "fluxmem train: error: output_dir 'runs' holds the data file 'runs/data.jsonl', and the run writes into "
        "that folder: pick an empty or new folder.")
    assert main(_train("--output-dir", str(read_only / "sft"))) == 2
    assert "cannot be written" in _one_error_line(capsys, "train")


def test_an_adapter_folder_protects_its_base_model(work, capsys):
    from fluxmem.loading import local_model_paths

    adapters = work / "adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../model"}))
    assert local_model_paths("adapters") == ["adapters", str(work / "model")]
    assert local_model_paths("Qwen/Qwen2.5-VL-7B-Instruct") == [] and local_model_paths("") == []
    before = _digest(work)
    assert main(["stream", "clip.mp4", "--questions", "q.jsonl", "--model", "adapters", "--out", "model/x.jsonl"]) == 2
    assert "lies inside the model" in _one_error_line(capsys, "stream")
    assert _digest(work) == before


def test_resume_passes_over_a_checkpoint_torn_while_saving(tmp_path, caplog):
    from fluxmem.train.run import COMPLETE_MARK, last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"glo')  # torn
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")  # runs saved before the mark
    (tmp_path / "checkpoint-4" / COMPLETE_MARK).write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-10 not saved whole (interrupted while saving?): resuming from checkpoint-4." in caplog.text


def test_an_output_behind_a_link_is_written_at_the_link_target(tmp_path):
    (tmp_path / "results").mkdir()
    os.symlink(tmp_path / "results" / "scores.json", tmp_path / "latest.json")
    write_text(tmp_path / "latest.json", "{}\n")
    assert (tmp_path / "latest.json").is_symlink() and (tmp_path / "results" / "scores.json").read_text() == "{}\n"
