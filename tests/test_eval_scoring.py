"""Scoring of StreamingBench and OVO-Bench, official and robust columns, against hand-computed
expectations for every task type."""

from __future__ import annotations

import json

import pytest

from fluxmem.eval.common import (
    DataIssues,
    EvalItem,
    ScoreTable,
    append_jsonl,
    robust_letter,
)
from fluxmem.eval.ovobench import (
    official_mcq,
    official_rec,
    official_yes_no,
    ovobench_aggregate,
    ovobench_table,
    rec_digits,
    score_ovobench,
    score_ovobench_replies,
    strict_count,
    strict_yes_no,
)
from fluxmem.eval.ovobench import score_reply as ovo_score_reply
from fluxmem.eval.streamingbench import (
    contextual_score,
    official_letter,
    proactive_says_yes,
    score_proactive_dialog,
    score_reply,
    score_streamingbench,
    score_streamingbench_field,
    streamingbench_overall,
    streamingbench_table,
)

RTVU, OMNI, CTX = (
    "Real-Time Visual Understanding",
    "Omni-Source Understanding",
    "Contextual Understanding",
)


def sb_item(uid, task, category, gold, kind="mcq", n_options=4, **meta):
    options = tuple(f"{'ABCDEFG'[i]}. o{i}" for i in range(n_options)) if kind != "proactive" \
        else ()
    return EvalItem(benchmark="streamingbench", uid=uid, task=task, category=category,
                    video="v.mp4", query_time=20.0, clip_start=0.0, clip_end=20.0, prompt="p",
                    kind=kind, gold=gold, options=options, meta={"context": 60, **meta})


def dialog(yes_at, answer, start=20, no_reply="No."):
    """Official-format history: polls from start+1, "yes" at ``yes_at`` (None: never)."""
    turns = []
    t = start + 1
    end = yes_at if yes_at is not None else start + 13
    while t <= end:
        said = "Yes, it is." if t == yes_at else no_reply
        turns += [{"role": "user", "content": "q", "time": t, "cost": 0.1},
                  {"role": "assistant", "content": said, "time": t, "cost": 0.1}]
        if t == yes_at:
            turns += [{"role": "user", "content": "Q", "time": t, "cost": 0.1},
                      {"role": "assistant", "content": answer, "time": t, "cost": 0.1}]
        t += 0.5 if isinstance(yes_at, float) else 1
    return turns


# ------------------------------------------------------------------------------ StreamingBench


@pytest.mark.parametrize(
    "reply, gold, official, robust",
    [
        ("B", "B", True, True),
        ("B. A map.", "B", True, True),
        ("b", "B", False, True),  # lower case: official fails
        (" B", "B", False, True),  # leading space: official fails
        ("The answer is B.", "B", False, True),
        ("(C)", "C", False, True),
        ("Answer: D) the dog", "D", False, True),
        ("A", "B", False, False),
        ("", "B", False, False),
        ("Bees are flying", "B", True, False),  # official luck, robust finds no letter
        ("E", "E", True, False),  # E is not among four options
    ],
)
def test_streamingbench_letter_rules(reply, gold, official, robust):
    item = sb_item("u", "Counting", RTVU, gold)
    assert score_reply(item, reply) == (official, robust)


def test_official_letter_and_robust_letter():
    assert official_letter(" B") == " " and official_letter("") is None
    assert official_letter(None) is None
    assert robust_letter("The answer is B.") == "B"
    assert robust_letter("(C)") == "C"
    assert robust_letter("b") == "B"
    assert robust_letter("Answer: D) ...") == "D"
    assert robust_letter("a dog runs") is None
    assert robust_letter("I think it is F", n_options=6) == "F"
    assert robust_letter("I think it is F", n_options=4) is None


def test_sqa_empty_reply_left_out_officially():
    item = sb_item("s", "Sequential Question Answering", CTX, "A", kind="sqa")
    assert score_reply(item, "") == (None, False)
    assert score_reply(item, "A") == (True, True)
    items = [item, sb_item("s2", "Sequential Question Answering", CTX, "B", kind="sqa"),
             sb_item("s3", "Sequential Question Answering", CTX, "C", kind="sqa")]
    answers = [{"uid": "s", "response": "A"}, {"uid": "s2", "response": ""},
               {"uid": "s3", "response": "x"}]
    scores = score_streamingbench(items, answers)
    assert scores["tasks"]["Sequential Question Answering"] == 50.0
    assert scores["counted"]["tasks"]["Sequential Question Answering"] == 2
    assert scores["skipped"] == {"sqa_empty_reply": 1}
    assert scores["robust"]["tasks"]["Sequential Question Answering"] == 100 / 3
    assert scores["robust"]["counted"]["tasks"]["Sequential Question Answering"] == 3


@pytest.mark.parametrize(
    "yes_at, ok",
    [(29, True), (31, True), (27, True), (31.5, False), (26.5, False), (32, False),
     (None, False)],
)
def test_proactive_time_window(yes_at, ok):
    res = score_proactive_dialog(dialog(yes_at, "3"), 29.0, "3")
    assert res.time_ok is ok
    assert res.correct is ok
    if yes_at is not None:
        assert res.t_yes == yes_at


def test_proactive_exactly_two_seconds_and_two_and_a_half():
    ok = [{"role": "assistant", "content": "yes", "time": 12.0},
          {"role": "assistant", "content": "goal", "time": 12.0}]
    late = [{"role": "assistant", "content": "yes", "time": 12.5},
            {"role": "assistant", "content": "goal", "time": 12.5}]
    assert score_proactive_dialog(ok, 10.0, "goal").correct
    assert not score_proactive_dialog(late, 10.0, "goal").time_ok


def test_proactive_answer_substring_and_formats():
    r = score_proactive_dialog(dialog(30, "The score is 3 now"), 29.0, "3")
    assert (r.time_ok, r.answer_ok, r.correct) == (True, True, True)
    r = score_proactive_dialog(dialog(30, "cards  Collected"), 29.0, "Cards collected")
    assert (r.answer_ok, r.correct, r.answer_ok_robust, r.correct_robust) == (
        False, False, True, True)
    r = score_proactive_dialog(dialog(30, "four"), 29.0, "3")
    assert r.time_ok and not r.correct
    # the benchmark's own stored form
    stored = {"answered": 30, "dialog_history": dialog(30, "3")}
    assert score_proactive_dialog(stored, 29.0, "3").correct
    assert score_proactive_dialog(json.dumps(stored), 29.0, "3").correct
    # a dialog cut short near the ground truth without a "yes" is wrong (official would read
    # the last turn's time)
    assert not score_proactive_dialog(dialog(None, "")[:4], 22.0, "3").correct
    assert proactive_says_yes(" YES") and proactive_says_yes("yesterday")
    assert not proactive_says_yes("No") and not proactive_says_yes(None)


def test_contextual_and_overall_formulas():
    assert contextual_score({"Misleading Context Understanding": 60,
                             "Anomaly Context Understanding": 40,
                             "Sequential Question Answering": 50,
                             "Proactive Output": 10}) == 38010 / 801
    assert contextual_score({"Sequential Question Answering": 50,
                             "Proactive Output": 10}) == (12500 + 510) / 301
    assert contextual_score({}) is None
    assert streamingbench_overall({RTVU: 80, OMNI: 50, CTX: 40}) == 282040 / 4301
    assert streamingbench_overall({RTVU: 80, CTX: 40}) == (200000 + 32040) / 3301
    assert streamingbench_overall({RTVU: 73.9}) == 73.9
    assert streamingbench_overall({}) is None


def test_score_streamingbench_end_to_end(tmp_path):
    items = [
        sb_item("op1", "Object Perception", RTVU, "A"),
        sb_item("op2", "Object Perception", RTVU, "B"),
        sb_item("ct1", "Counting", RTVU, "C"),
        sb_item("er1", "Emotion Recognition", OMNI, "D"),
        sb_item("sqa1", "Sequential Question Answering", CTX, "A", kind="sqa"),
        sb_item("sqa2", "Sequential Question Answering", CTX, "B", kind="sqa"),
        sb_item("po1", "Proactive Output", CTX, "3", kind="proactive", gt_time=29.0),
        sb_item("mcu1", "Misleading Context Understanding", CTX, "A"),
        sb_item("acu1", "Anomaly Context Understanding", CTX, "A"),
    ]
    path = tmp_path / "answers.jsonl"
    for rec in [
        {"uid": "op1", "response": "A"},
        {"uid": "op2", "response": "b"},
        {"uid": "op2", "response": "B"},  # a duplicate: the first record wins
        {"uid": "ct1", "response": " C"},
        {"uid": "er1", "response": "D"},
        {"uid": "sqa1", "response": ""},
        {"uid": "sqa2", "response": "B"},
        {"uid": "po1", "response": dialog(32, "3")},  # 3 s late
        {"uid": "acu1", "response": None, "skipped": "unreadable_video"},
        {"uid": "ghost", "response": "A"},
    ]:
        append_jsonl(path, rec, fsync=False)
    issues = DataIssues()
    issues.skip("bad_timestamp", "from the loader")
    s = score_streamingbench(items, path, issues)

    assert s["tasks"] == {
        "Object Perception": 50.0, "Counting": 0.0, "Emotion Recognition": 100.0,
        "Sequential Question Answering": 100.0, "Proactive Output": 0.0}
    ctx = (250 * 100 + 51 * 0) / 301
    rtvu = 100 / 3
    assert s["categories"] == {RTVU: rtvu, OMNI: 100.0, CTX: ctx}
    assert s["overall"] == (2500 * rtvu + 1000 * 100 + 801 * ctx) / 4301
    assert s["counted"] == {
        "tasks": {"Object Perception": 2, "Counting": 1, "Emotion Recognition": 1,
                  "Sequential Question Answering": 1, "Proactive Output": 1},
        "categories": {RTVU: 3, OMNI: 1, CTX: 2},
        "overall": 6,
    }
    assert s["skipped"] == {"bad_timestamp": 1, "no_reply": 1, "sqa_empty_reply": 1,
                            "unreadable_video": 1}

    r = s["robust"]
    assert r["tasks"] == {
        "Object Perception": 100.0, "Counting": 100.0, "Emotion Recognition": 100.0,
        "Sequential Question Answering": 50.0, "Proactive Output": 0.0}
    rctx = (250 * 50) / 301
    assert r["categories"] == {RTVU: 100.0, OMNI: 100.0, CTX: rctx}
    assert r["overall"] == (2500 * 100 + 1000 * 100 + 801 * rctx) / 4301
    assert r["skipped"] == {"bad_timestamp": 1, "no_reply": 1, "unreadable_video": 1}

    assert s["extra"]["proactive_time_accuracy"] == 0.0
    assert s["settings"]["context"] == 60
    assert issues["duplicate_uid"] == 1 and issues["answer_without_item"] == 1
    assert any("absent: MCU, ACU" in n for n in s["notes"])
    assert any("Omni-Source Understanding: micro" in n and "absent: SCU, SD, MA" in n
               for n in s["notes"])

    table = streamingbench_table(s, columns=("official", "robust"))
    md = table.to_markdown()
    assert "| | n | official | robust |" in md
    assert "| Object Perception (OP) | 2 | 50.00 | 100.00 |" in md
    assert "| Sequential Question Answering (SQA) | 1 / 2 | 100.00 | 50.00 |" in md
    assert f"| **{RTVU}** | 3 | **33.33** | **100.00** |" in md
    assert "| **Overall** | 6 / 7 |" in md
    assert "- context: 60 s before each question" in md
    assert md.index("Counting (CT)") < md.index(f"**{RTVU}**") < md.index("Emotion")
    back = json.loads(table.to_json())
    assert back["columns"] == ["official", "robust"] and back["rows"][-1]["label"] == "Overall"
    # the published column (its regex chain) when asked for: "A" read as A for OP's wrong first char
    md3 = streamingbench_table(s).to_markdown()
    assert "| | n | official | robust | published |" in md3


def test_only_some_categories_present_is_said():
    items = [sb_item("a", "Counting", RTVU, "A")]
    s = score_streamingbench(items, {"a": {"uid": "a", "response": "A"}})
    assert s["overall"] == 100.0 and s["categories"] == {RTVU: 100.0}
    assert any(n.startswith("Overall:") and "absent: Omni-Source Understanding, Contextual "
               "Understanding" in n for n in s["notes"])
    assert "Overall" in streamingbench_table(s).to_markdown()


SB_FIELD_REAL = [
    {"video_path": "./videos/sample_1_real.mp4", "questions": [
        {"task_type": "Object Recognition", "question": "Q1", "time_stamp": "00:00:10",
         "answer": "B", "options": ["A. a", "B. b", "C. c", "D. d"], "MyModel": "B. b"},
        {"task_type": "Counting", "question": "Q2", "time_stamp": "00:00:20",
         "answer": "C", "options": ["A. a", "B. b", "C. c", "D. d"], "MyModel": "c"},
        {"task_type": "Counting", "question": "Q3", "time_stamp": "00:00:30",
         "answer": "A", "options": ["A. a", "B. b", "C. c", "D. d"]},
    ]},
]
SB_FIELD_SQA = [[
    {"video_path": "./videos/s.mp4", "questions": [
        {"task_type": "Sequential Question Answering", "question": "S1",
         "time_stamp": "00:00:10", "answer": "A", "options": ["a", "b", "c", "d"],
         "MyModel": "A"}]},
    {"video_path": "./videos/s.mp4", "questions": [
        {"task_type": "Sequential Question Answering", "question": "S2",
         "time_stamp": "00:00:20", "answer": "B", "options": ["a", "b", "c", "d"],
         "MyModel": ""}]},
]]
SB_FIELD_PO = [
    {"video_path": "./videos/p.mp4", "questions": [
        {"task_type": "Proactive Output", "question": 'When X, output "goal".',
         "time_stamp": "00:00:20", "ground_truth_time_stamp": "00:00:29",
         "ground_truth_output": "goal",
         "MyModel": {"answered": 30, "dialog_history": dialog(30, "goal!")}}]},
]


def test_score_streamingbench_field(tmp_path):
    d = tmp_path / "sb"
    d.mkdir()
    (d / "real.json").write_text(json.dumps(SB_FIELD_REAL))
    (d / "sqa.json").write_text(json.dumps(SB_FIELD_SQA))
    (d / "po.json").write_text(json.dumps(SB_FIELD_PO))
    s = score_streamingbench_field(d, "MyModel")
    assert s["tasks"] == {"Object Perception": 100.0, "Counting": 0.0,
                                        "Sequential Question Answering": 100.0,
                                        "Proactive Output": 100.0}
    assert s["skipped"] == {"no_reply": 1, "sqa_empty_reply": 1}
    assert s["robust"]["tasks"]["Counting"] == 100.0
    assert s["robust"]["tasks"]["Sequential Question Answering"] == 50.0


# ------------------------------------------------------------------------------ OVO-Bench


@pytest.mark.parametrize(
    "reply, gold, official, strict",
    [
        ("B", "B", True, True),
        ("b", "B", False, True),  # case-sensitive substring
        ("The answer is B", "B", True, True),
        ("A lot of B", "B", True, False),  # lenient: letter anywhere
        ("Based on the video, C", "B", True, False),
        ("C", "B", False, False),
        (None, "B", False, False),
        ("", "A", False, False),
    ],
)
def test_ovo_mcq_rules(reply, gold, official, strict):
    assert official_mcq(reply, gold) is official
    item = EvalItem(benchmark="ovobench", uid="1", task="EPM", category="backward",
                    video="v", query_time=1, clip_start=0, clip_end=1, prompt="p", kind="mcq",
                    gold=gold, options=("w", "x", "y", "z"))
    assert ovo_score_reply(item, reply) == (official, strict)


@pytest.mark.parametrize(
    "reply, count, official, strict",
    [
        ("3", 3, True, True),
        ("I count 1 and 2", 12, True, False),
        ("I count 1 and 2", 1, False, True),
        ("three", 3, False, True),
        ("There are 3 people jumping 3 times", 3, False, True),
        ("0", 0, True, True),
        ("none", 0, False, False),
        (None, 2, False, False),
    ],
)
def test_ovo_rec_rules(reply, count, official, strict):
    assert official_rec(reply, count) is official
    assert (strict_count(reply) == count) is strict


def test_rec_digits():
    assert rec_digits("I count 1 and 2") == "12"
    assert rec_digits("no digits") == "" and rec_digits(None) == ""


@pytest.mark.parametrize(
    "reply, gold, official, strict",
    [
        ("Yes", "Yes", True, True),
        ("Yes.", "Yes", True, True),
        ("yes", "Yes", False, True),
        ("Y", "Yes", True, True),  # exact Y
        ("Y.", "Yes", False, True),  # not exactly Y, no "Yes" in it
        ("N", "Yes", False, False),
        ("No", "Yes", False, False),
        ("N", "No", True, True),
        ("No, not yet", "No", True, True),
        ("Not really", "No", True, False),  # "No" is a substring of "Not"
        ("no", "No", False, True),
        ("\u201cNo\u201d", "No", True, True),
        ("Y", "No", False, False),
        (None, "No", False, False),
    ],
)
def test_ovo_yes_no_rules(reply, gold, official, strict):
    assert official_yes_no(reply, gold) is official
    assert (strict_yes_no(reply) == gold) is strict


def test_ovo_aggregate():
    cats, overall = ovobench_aggregate({"EPM": 50, "ASI": 100, "OCR": 20, "REC": 40,
                                        "SSR": 60, "CRR": 80})
    assert cats == {"backward": 75.0, "realtime": 20.0, "forward": 60.0}
    assert overall == 155 / 3
    cats, overall = ovobench_aggregate({"STU": 30, "FPD": 50})
    assert cats == {"realtime": 40.0} and overall == 40.0
    assert ovobench_aggregate({}) == ({}, None)


OVO_ANN = [
    {"id": 1, "task": "EPM", "video": "a.mp4", "realtime": 10, "question": "Q?",
     "answer": "y", "options": ["x", "y", "z"], "gt": 1},
    {"id": 2, "task": "OCR", "video": "b.mp4", "realtime": 5.5, "question": "Text?",
     "answer": "EXIT", "options": ["EXIT", "STOP"], "gt": 0},
    {"id": 4, "task": "REC", "video": "c.mp4", "activity": "jump",
     "test_info": [{"realtime": 5, "count": 1}, {"realtime": 9, "count": 3}]},
    {"id": 5, "task": "SSR", "video": "d.mp4", "tutorial": "t",
     "test_info": [{"realtime": 10, "step": "s1", "type": 1},
                   {"realtime": 20, "step": "s2", "type": 0}]},
    {"id": 6, "task": "CRR", "video": "e.mp4", "question": "Q", "answer": "A",
     "ask_time": 1, "clue_time": 8,
     "test_info": [{"realtime": 4, "type": 0}, {"realtime": 9, "type": 1}]},
]


def test_score_ovobench_replies_end_to_end(tmp_path):
    ann = tmp_path / "ovo.json"
    ann.write_text(json.dumps(OVO_ANN))
    replies = tmp_path / "replies.jsonl"
    lines = [
        {"id": 1, "response": "B"},
        {"id": 1, "response": "A"},  # duplicate: first kept
        {"id": 2, "response": "a"},
        {"id": 4, "probe": 0, "response": "1"},
        {"id": 4, "probe": 1, "response": "I count 1 and 2"},
        {"id": 5, "probe": 0, "response": "Yes"},
        {"id": 5, "probe": 1, "response": "Not really"},
        {"id": 6, "probe": 0, "response": "N"},
        {"id": 6, "response": "Yes"},  # forward reply without probe: ignored, counted
    ]
    replies.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    issues = DataIssues()
    s = score_ovobench_replies(ann, replies, issues=issues)
    assert s["tasks"] == {"EPM": 100.0, "OCR": 0.0, "REC": 50.0, "SSR": 100.0,
                                        "CRR": 100.0}
    assert s["categories"] == {"backward": 100.0, "realtime": 0.0,
                                             "forward": 250 / 3}
    assert s["overall"] == (100 + 0 + 250 / 3) / 3
    assert s["counted"]["tasks"] == {"EPM": 1, "OCR": 1, "REC": 2, "SSR": 2, "CRR": 1}
    assert s["counted"]["categories"] == {"backward": 1, "realtime": 1, "forward": 5}
    assert s["skipped"] == {"no_reply": 1}
    assert s["extra"]["task_mean"] == 350 / 5
    r = s["robust"]
    assert r["tasks"] == {"EPM": 100.0, "OCR": 100.0, "REC": 50.0, "SSR": 50.0,
                                        "CRR": 100.0}
    assert r["overall"] == (100 + 100 + 200 / 3) / 3
    assert issues["duplicate_uid"] == 1 and issues["probe_missing"] == 1
    assert any("absent: ASI, HLD" in n for n in s["notes"])

    md = ovobench_table(s).to_markdown()
    assert "| EPM | 1 | 100.00 | 100.00 |" in md
    assert "| **Backward Active Tracing** | 1 | **100.00** | **100.00** |" in md
    assert "| **Forward Active Responding** | 5 | **83.33** | **66.67** |" in md
    assert "- skipped (official): no_reply 1" in md


def test_score_ovobench_uid_records_and_skips():
    item = EvalItem(benchmark="ovobench", uid="7#probe0", task="REC", category="forward",
                    video="v", query_time=1, clip_start=0, clip_end=1, prompt="p", kind="rec",
                    gold=2)
    s = score_ovobench([item], [{"uid": "7#probe0", "response": None,
                                 "skipped": "unreadable_video"}])
    assert s["tasks"] == {} and s["overall"] is None
    assert s["skipped"] == {"unreadable_video": 1}
    s = score_ovobench([item], [{"uid": "7#probe0", "response": None}])
    assert s["skipped"] == {"no_response": 1}
    s = score_ovobench([item], {"7#probe0": {"uid": "7#probe0", "response": "2 times"}})
    assert s["tasks"] == {"REC": 100.0} and s["overall"] == 100.0


def test_notes_cover_the_robust_column():
    items = [sb_item("a", "Counting", RTVU, "A"),
             sb_item("s", "Sequential Question Answering", CTX, "A", kind="sqa")]
    s = score_streamingbench(items, [{"uid": "a", "response": "A"},
                                     {"uid": "s", "response": ""}])
    assert CTX not in s["categories"] and s["robust"]["categories"][CTX] == 0.0
    assert any(n.startswith("robust column: Contextual Understanding") for n in s["notes"])
    md = streamingbench_table(s).to_markdown()
    assert "| Sequential Question Answering (SQA) | – / 1 / – | – | 0.00 | – |" in md


def test_score_table_markdown_shape():
    t = ScoreTable("T")
    t.add("task x", "task", {"official": 50.0, "robust": None}, {"official": 2, "robust": 2})
    t.add("Overall", "overall", {"official": 50.0, "robust": 75.125})
    t.notes.append("a note")
    md = t.to_markdown(digits=1)
    assert md.splitlines()[:5] == [
        "### T", "", "| | n | official | robust |", "|---|---:|---:|---:|",
        "| task x | 2 | 50.0 | – |",
    ]
    assert "| **Overall** |  | **50.0** | **75.1** |" in md and md.endswith("- a note\n")
