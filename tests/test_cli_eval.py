"""``fluxmem score`` for replies produced elsewhere, and the command lines' options and errors."""

from __future__ import annotations

import json

import pytest

from fluxmem.cli import main
from fluxmem.eval.synthetic import write_ovobench_fixture, write_streamingbench_fixture


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {"sb": write_streamingbench_fixture(root / "sb"), "ovo": write_ovobench_fixture(root / "ovo")}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_ovobench_replies(fixtures, tmp_path, capsys):
    entries = json.loads(fixtures["ovo"]["annotations"].read_text())
    rows = []
    for e in entries:
        if "gt" in e:
            letter = "ABCD"[e["gt"]]
            rows.append({"id": e["id"], "response": "lots of text" if e["id"] == 1 else letter})
    rows += [{"id": 30, "probe": k, "response": str(k + 1)} for k in range(3)]  # REC counts 1, 2, 3
    rows += [{"id": 31, "probe": 0, "response": "Yes"}, {"id": 31, "probe": 1, "response": "No"},
             {"id": 32, "probe": 0, "response": "No"},  # CRR probe 1 has no reply
             {"id": 32, "response": "Yes"},  # a forward reply without its probe: counted, not scored
             {"id": 0, "response": "B"}]  # a second reply to id 0: the first one counts
    replies = _jsonl(tmp_path / "replies.jsonl", rows)
    out = tmp_path / "scores"
    assert main(["score", "ovobench", "--annotations", str(fixtures["ovo"]["annotations"]),
                 "--replies", str(replies), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert printed.startswith((out / "scores.md").read_text())
    assert scores["tasks"]["EPM"] == 100.0 and scores["tasks"]["ASI"] == 0.0
    assert scores["categories"] == {"backward": 200 / 3, "realtime": 100.0, "forward": 100.0}
    assert scores["overall"] == (200 / 3 + 200) / 3
    assert scores["counted"]["tasks"]["CRR"] == 1 and scores["skipped"] == {"no_reply": 1}
    warnings = scores["data"]["loader"]["warnings"]
    assert warnings["probe_missing"] == 1 and warnings["duplicate_uid"] == 1


def test_score_streamingbench_field(fixtures, tmp_path, capsys):
    ann = tmp_path / "questions_real.json"
    subsets = json.loads((fixtures["sb"]["annotations"] / "Real_Time_Visual_Understanding.json").read_text())
    expected_right = 0
    for subset in subsets:
        for k, q in enumerate(subset["questions"]):
            if k % 2 == 0:
                q["MyModel"] = q["answer"] + ". because"  # first character right
                expected_right += q["time_stamp"] != "soon"
            else:
                q["MyModel"] = "The answer is " + q["answer"]  # official wrong, robust right
    ann.write_text(json.dumps(subsets))
    out = tmp_path / "scores"
    assert main(["score", "streamingbench", "--annotations", str(ann), "--field", "MyModel", "--out", str(out),
                 "--context", "0"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    rtvu = "Real-Time Visual Understanding"
    n = scores["counted"]["categories"][rtvu]
    assert n == 9  # the unparseable timestamp is skipped while loading
    assert scores["categories"][rtvu] == 100 * expected_right / 9
    assert scores["robust"]["categories"][rtvu] == 100.0
    assert scores["skipped"] == {"bad_timestamp": 1}
    assert scores["settings"]["context"] is None
    assert "| **Overall** |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["score", "ovobench", "--annotations", "x.json", "--out", "o"], "--replies"),
        (["score", "streamingbench", "--annotations", "x.json"], "--out"),
        (["score", "/no/such/run"], "not a directory"),
    ],
)
def test_score_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_score_dir_rejects_replies_options(tmp_path, capsys):
    assert main(["score", str(tmp_path), "--field", "x"]) == 2
    assert "--field is for scoring replies" in capsys.readouterr().err
    assert main(["score", str(tmp_path)]) == 2
    assert "holds no answers.jsonl" in capsys.readouterr().err


def test_eval_errors_before_loading_a_model(fixtures, tmp_path, capsys):
    sb = fixtures["sb"]
    base = ["eval", "streamingbench", "--annotations", str(sb["annotations"]), "--out", str(tmp_path / "o"),
            "--model", str(tmp_path / "no-model")]
    assert main([*base, "--videos", str(tmp_path / "none")]) == 2
    assert "video directory" in capsys.readouterr().err
    assert main([*base, "--videos", str(sb["videos"]), "--tasks", "Juggling"]) == 2
    assert "unknown StreamingBench task 'Juggling'" in capsys.readouterr().err
    assert main([*base, "--videos", str(sb["videos"]), "--limit", "0"]) == 2
    assert main(["eval"]) == 2
    assert "streamingbench" in capsys.readouterr().out


def test_eval_tasks_and_balanced_limit(fixtures, tiny_model_dir, tmp_path, capsys):
    sb = fixtures["sb"]
    out = tmp_path / "run"
    assert main(["eval", "streamingbench", "--annotations", str(sb["annotations"]), "--videos", str(sb["videos"]),
                 "--out", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--tasks", "OP,CR", "SQA",
                 "--limit", "4", "--context", "256", "--fps", "1", "--max-frames", "6", "--max-pixels", "12544",
                 "--max-new-tokens", "2", "--no-progress"]) == 0
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert [i["task"] for i in items] == ["Object Perception", "Causal Reasoning",
                                         "Sequential Question Answering", "Sequential Question Answering"]
    assert items[1]["clip_start"] == 0.0 and items[1]["clip_end"] == 70.0  # 256 s window
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["tasks"] == ["OP", "CR", "SQA"] and run["settings"]["limit"] == 4
    assert run["settings"]["protocol"] == "fluxmem" and run["settings"]["protocol_settings"]["context"] == 256.0
    assert "Sequential Question Answering (SQA)" in capsys.readouterr().out


# ------------------------------------------------------------------ one-line errors and warnings


def _one_line(capsys, text):
    err = capsys.readouterr().err.strip()
    assert text in err and len(err.splitlines()) == 1, err
    return err


def test_eval_out_naming_a_file(fixtures, tmp_path, capsys):
    sb = fixtures["sb"]
    out = tmp_path / "results.txt"
    out.write_text("not a directory")
    argv = ["eval", "streamingbench", "--annotations", str(sb["annotations"]), "--videos", str(sb["videos"]),
            "--out", str(out), "--model", str(tmp_path / "no-model")]
    assert main(argv) == 2
    _one_line(capsys, f"--out {out} is a file; pass a directory")
    assert main([*argv, "--dry-run"]) == 2
    _one_line(capsys, "is a file")
    assert out.read_text() == "not a directory"


def test_eval_negative_context_is_rejected(fixtures, tmp_path, capsys):
    sb = fixtures["sb"]
    argv = ["eval", "streamingbench", "--annotations", str(sb["annotations"]), "--videos", str(sb["videos"]),
            "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-model"), "--context", "-5"]
    assert main(argv) == 2
    _one_line(capsys, "argument --context: must be seconds >= 0, got '-5'")
    assert not (tmp_path / "o").exists()


def test_score_streamingbench_unknown_field(fixtures, tmp_path, capsys):
    ann = tmp_path / "q.json"
    subsets = json.loads((fixtures["sb"]["annotations"] / "Real_Time_Visual_Understanding.json").read_text())
    for subset in subsets:
        for q in subset["questions"]:
            q["MyModel"] = "A"
    ann.write_text(json.dumps(subsets))
    argv = ["score", "streamingbench", "--annotations", str(ann), "--out", str(tmp_path / "s")]
    assert main([*argv, "--field", "NoSuchModel"]) == 2
    _one_line(capsys, "holds the field 'NoSuchModel'; reply fields found: MyModel")
    plain = fixtures["sb"]["annotations"] / "Real_Time_Visual_Understanding.json"
    assert main(["score", "streamingbench", "--annotations", str(plain), "--out", str(tmp_path / "s"),
                 "--field", "MyModel"]) == 2
    _one_line(capsys, "reply fields found: none (the file holds annotations only)")
    assert main([*argv, "--field", "MyModel", "--replies", "r.jsonl"]) == 2
    _one_line(capsys, "--replies is for ovobench")
    assert not (tmp_path / "s" / "scores.json").exists()


def test_score_ovobench_rejects_field(fixtures, tmp_path, capsys):
    replies = tmp_path / "r.jsonl"
    replies.write_text('{"id": 0, "response": "A"}\n')
    assert main(["score", "ovobench", "--annotations", str(fixtures["ovo"]["annotations"]), "--replies",
                 str(replies), "--field", "MyModel", "--out", str(tmp_path / "s")]) == 2
    _one_line(capsys, "--field is for streamingbench")


def test_sequential_qa_out_of_time_order_warns(tmp_path):
    from fluxmem.eval import DataIssues, load_streamingbench

    video = [[{"video_path": "./v.mp4", "questions": [{
        "task_type": "Sequential Question Answering", "question": f"Q{k}", "time_stamp": ts, "answer": "A",
        "options": ["a", "b"]}]} for k, ts in enumerate(("00:00:50", "00:00:20", "00:01:00"))]]
    path = tmp_path / "sqa.json"
    path.write_text(json.dumps(video))
    issues = DataIssues(log_limit=0)
    items = load_streamingbench(path, issues=issues)
    assert issues["sqa_out_of_time_order"] == 1 and "asked at 20 s after a question at 50 s" in \
        issues.examples["sqa_out_of_time_order"][0]
    assert [i.meta["history"] for i in items] == [0, 1, 2]  # file order kept, as the benchmark's code


def test_score_mentions_torn_and_duplicate_lines(fixtures, tmp_path, capsys):
    from fluxmem.eval import load_ovobench

    items = load_ovobench(fixtures["ovo"]["annotations"])
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"uid": i.uid, "response": "A", "eval_item": {k: v for k, v in i.to_dict().items()
                                                                      if k != "prompt"}, "prompt": i.prompt})
             for i in items[:3]]
    (run / "answers.jsonl").write_text("\n".join(lines + [lines[0]]) + '\n{"uid": "torn')
    assert main(["score", str(run)]) == 0
    captured = capsys.readouterr()
    assert "answers files hold duplicate_uid 1, truncated_last_line 1" in captured.err
    assert "answers files: duplicate_uid 1, truncated_last_line 1" in captured.out
    scores = json.loads((run / "scores.json").read_text())
    assert scores["data"]["answers_file"] == {"duplicate_uid": 1, "truncated_last_line": 1}
