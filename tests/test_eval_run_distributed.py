"""Sharded benchmark runs: two processes (as torchrun/accelerate launch start them) give the same
answers file as one process; leftover per-rank parts are merged by a rerun or by ``fluxmem score``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fluxmem.cli import main
from fluxmem.eval.runner import VOLATILE_FIELDS, gather_records, score_run
from fluxmem.eval.synthetic import write_ovobench_fixture


@pytest.fixture(scope="module")
def ovo(tmp_path_factory):
    return write_ovobench_fixture(tmp_path_factory.mktemp("ovo"))


def _args(model_dir, fx, out, *extra):
    return ["eval", "ovobench", "--annotations", str(fx["annotations"]), "--videos", str(fx["videos"]),
            "--out", str(out), "--model", str(model_dir), "--device", "cpu", "--fps", "0.5",
            "--max-frames", "8", "--max-pixels", "12544", "--short-frames", "2", "--medium-frames", "4",
            "--max-new-tokens", "4", "--no-progress", *extra]


def _stable_lines(path):
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE_FIELDS}
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(ovo, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(_args(tiny_model_dir, ovo, out)) == 0
    return out


def test_two_processes_merge_to_the_single_process_answers(ovo, tiny_model_dir, single, tmp_path):
    out = tmp_path / "sharded"
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT="29533", HF_HUB_OFFLINE="1",
                   OMP_NUM_THREADS=str(torch.get_num_threads()))  # the same arithmetic as this process
        procs.append(subprocess.Popen([sys.executable, "-m", "fluxmem.cli", *_args(tiny_model_dir, ovo, out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "### OVO-Bench" in outputs[0][0] and "### OVO-Bench" not in outputs[1][0]  # rank 0 scores
    assert "rank 0 merges" in outputs[1][1]
    assert sorted(p.name for p in out.glob("answers*.jsonl")) == ["answers.jsonl"]  # parts merged away
    merged = _stable_lines(out / "answers.jsonl")
    assert merged == _stable_lines(single / "answers.jsonl")
    assert len(merged) == 19
    scores = json.loads((out / "scores.json").read_text())
    ref = json.loads((single / "scores.json").read_text())
    assert {k: scores[k] for k in ("tasks", "categories", "overall", "counted", "skipped", "robust")} == {
        k: ref[k] for k in ("tasks", "categories", "overall", "counted", "skipped", "robust")}
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


def test_a_missing_rank_is_finished_by_a_rerun(ovo, tiny_model_dir, single, tmp_path, monkeypatch):
    out = tmp_path / "half"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(_args(tiny_model_dir, ovo, out)) == 0  # rank 1 answers its shard and leaves
    part = out / "answers.rank1.jsonl"
    assert part.exists() and not (out / "scores.json").exists()
    n1 = len(part.read_text().splitlines())
    assert 0 < n1 < 19
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(_args(tiny_model_dir, ovo, out, "--merge-timeout", "0")) == 0  # nothing left to wait for
    assert not part.exists()
    assert _stable_lines(out / "answers.jsonl") == _stable_lines(single / "answers.jsonl")


def test_rank0_gives_up_waiting_then_one_process_resumes(ovo, tiny_model_dir, single, tmp_path, monkeypatch):
    out = tmp_path / "lonely"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(_args(tiny_model_dir, ovo, out, "--merge-timeout", "0.5")) == 1  # rank 1 never came
    assert (out / "answers.rank0.jsonl").exists() and not (out / "scores.json").exists()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(_args(tiny_model_dir, ovo, out)) == 0  # one process finishes the other shard
    assert _stable_lines(out / "answers.jsonl") == _stable_lines(single / "answers.jsonl")


def test_score_dir_merges_leftover_parts(single, tmp_path):
    out = tmp_path / "parts"
    out.mkdir()
    for name in ("run.json", "items.jsonl"):
        (out / name).write_bytes((single / name).read_bytes())
    lines = (single / "answers.jsonl").read_text().splitlines(keepends=True)
    (out / "answers.rank0.jsonl").write_text("".join(lines[::2]))
    (out / "answers.rank1.jsonl").write_text("".join(lines[1::2]) + lines[0])  # one duplicate
    assert main(["score", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    ref = json.loads((single / "scores.json").read_text())
    assert {k: scores[k] for k in ("tasks", "categories", "overall", "counted", "skipped")} == {
        k: ref[k] for k in ("tasks", "categories", "overall", "counted", "skipped")}
    assert len(gather_records(out)) == 19
    assert scores["data"]["answers_file"] == {"duplicate_uid": 1}
    assert score_run(out, write=False)[0]["overall"] == ref["overall"]
