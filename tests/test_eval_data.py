"""Evaluation data layer: timestamps, loaders of both StreamingBench layouts and OVO-Bench,
prompts (verbatim), the duration hook, and answers files. Fixtures are written here."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from fluxmem.errors import ConfigError, InputError
from fluxmem.eval.common import (
    DataIssues,
    EvalItem,
    append_jsonl,
    dedupe_by_uid,
    fit_to_duration,
    format_timestamp,
    load_answers,
    parse_timestamp,
    pending_items,
    read_jsonl,
    shard_items,
    skip_record,
)
from fluxmem.eval.ovobench import load_ovobench
from fluxmem.eval.streamingbench import (
    load_streamingbench,
    proactive_dialog,
    proactive_next_turn,
)

MCQ_HEAD_4 = (
    "You are an advanced video question-answering AI assistant. You have been provided with "
    "some frames from the video and a multiple-choice question related to the video. Your task "
    "is to carefully analyze the video and provide the best answer to question, choosing from "
    "the four options provided. Respond with only the letter (A, B, C, or D) of the correct "
    "option."
)
SQA_HEAD_4 = (
    "You are an advanced video question-answering AI assistant. You have been provided with a "
    "video and a multiple-choice question related to the video. Your task is to carefully "
    "analyze the video and the provided context to answer the question, choosing from the four "
    "options provided. Respond with only the letter (A, B, C, or D) of the correct option."
)
PROACTIVE_HEAD = (
    "You are an advanced image question-answering AI assistant. You have been provided with "
    "images and a question related to the images. Your task is to carefully analyze the images "
    "and provide the answer to the question. You need to carefully confirm whether the images "
    "content meet the conditions of the question, and then output the correct content."
)


# ------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    "raw, seconds, warning",
    [
        ("00:03:10", 190.0, None),
        ("0:02:22", 142.0, None),  # one-digit hours are normal
        ("01:00:00", 3600.0, None),
        ("00:01:02.5", 62.5, None),
        (12.5, 12.5, None),
        (7, 7.0, None),
        ("00:24", 24.0, "timestamp_two_fields"),
        ("08:01", 481.0, "timestamp_two_fields"),
        ("00:00:8", 8.0, "timestamp_unpadded"),
        ("00:12450", 12450.0, "timestamp_field_overflow"),  # official arithmetic, flagged
        ("00:00:75", 75.0, "timestamp_field_overflow"),
        ("75", 75.0, "timestamp_plain_seconds"),
    ],
)
def test_parse_timestamp_forms(raw, seconds, warning):
    issues = DataIssues()
    assert parse_timestamp(raw, issues, "x") == seconds
    if warning is None:
        assert issues.total == 0
    else:
        assert dict(issues.counts) == {warning: 1}


@pytest.mark.parametrize("raw", ["", "  ", "abc", "1:2:3:4", "-5", -5, None, True,
                                 float("nan"), "00:xx:10", "00::10"])
def test_parse_timestamp_unparseable(raw):
    issues = DataIssues()
    assert parse_timestamp(raw, issues) is None
    assert issues["timestamp_unparseable"] == 1


def test_format_timestamp():
    assert format_timestamp(190) == "00:03:10"
    assert format_timestamp(3661.5) == "01:01:01.5"


def test_data_issues_counts_and_logs(caplog):
    issues = DataIssues(log_limit=2)
    with caplog.at_level(logging.WARNING, logger="fluxmem.eval"):
        for i in range(4):
            issues.warn("kind_a", f"detail {i}")
        issues.skip("kind_b", "gone")
        issues.note("quiet")
    assert issues["kind_a"] == 4 and issues["kind_b"] == 1 and issues.total == 5
    assert dict(issues.skipped) == {"kind_b": 1}
    assert issues.notes["quiet"] == 1
    # two logged, one "further ... suppressed", then the skip
    assert sum("kind_a" in r.message for r in caplog.records) == 3
    d = issues.to_dict()
    assert d["warnings"] == {"kind_a": 4, "kind_b": 1} and d["skipped"] == {"kind_b": 1}
    assert d["examples"]["kind_a"][:2] == ["detail 0", "detail 1"]
    other = DataIssues()
    other.skip("kind_b")
    assert issues.merge(other).skipped["kind_b"] == 2


# ------------------------------------------------------------------------------ StreamingBench JSON

SB_REAL = [
    {
        "time": "[0:00:00 - 0:00:20]",
        "questions": [
            {
                "task_type": "Object Recognition",
                "question": "What can be seen on the screen right now?",
                "time_stamp": "00:03:10",
                "answer": "B",
                "options": ["A. A compass.", "B. A map.", "C. A meter.", "D. A radar."],
                "required_ability": "working memory",
            },
            {
                "task_type": "Counting",
                "question": "How many cups are there?",
                "time_stamp": "00:24",
                "answer": "C",
                "options": ["One.", "Two.", "Three.", "Four."],
            },
        ],
        "video_categories": "kitchen",
        "video_path": "./videos/sample_1_real.mp4",
    },
    {
        "questions": [
            {
                "task_type": "Causal Reasoning",
                "question": "Why did he stop?",
                "time_stamp": "00:00:8",
                "answer": "F",
                "options": ["A. a", "B. b", "C. c", "D. d", "E. e", "F. f"],
            },
            {
                "task_type": "Text-Rich Understanding",
                "question": "What does the sign say?",
                "time_stamp": "00:12450",
                "answer": "A",
                "options": ["A. Stop", "B. Go", "C. Yield", "D. Exit"],
            },
            {
                "task_type": "Spatial Understanding",
                "question": "Where is the cat?",
                "time_stamp": "later",
                "answer": "A",
                "options": ["A. Left", "B. Right", "C. Up", "D. Down"],
            },
            {
                "task_type": "Counting",
                "question": "How many dogs?",
                "time_stamp": "00:00:30",
                "answer": "E",
                "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
            },
            {
                "task_type": "Telepathy",
                "question": "What is he thinking?",
                "time_stamp": "00:00:30",
                "answer": "A",
                "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
            },
        ],
        "video_path": "./videos/sample_2_real.mp4",
    },
]

SB_SQA = [
    [
        {
            "questions": [
                {
                    "task_type": "Related Context Understanding",
                    "question": "Who is serving?",
                    "time_stamp": "00:00:36",
                    "answer": "A",
                    "options": ["Wang.", "Fan.", "Xu.", "Ma."],
                }
            ],
            "video_path": "./videos/sample_17_sqa.mp4",
        },
        {
            "questions": [
                {
                    "task_type": "Related Context Understanding",
                    "question": "What is his score now?",
                    "time_stamp": "00:03:02",
                    "answer": "C",
                    "options": ["2.", "6.", "7.", "4."],
                }
            ],
            "video_path": "./videos/sample_17_sqa.mp4",
        },
        {
            "questions": [
                {
                    "task_type": "Sequential Question Answering",
                    "question": "And his opponent's?",
                    "time_stamp": "00:04:58",
                    "answer": "A",
                    "options": ["8.", "7.", "5.", "9."],
                }
            ],
            "video_path": "./videos/sample_17_sqa.mp4",
        },
    ]
]

SB_PROACTIVE = [
    {
        "questions": [
            {
                "task_type": "Proactive Output",
                "question": 'When the scoreboard shows 3 points for USA, output "3".',
                "time_stamp": "00:00:20",
                "ground_truth_time_stamp": "00:00:29",
                "ground_truth_output": "3",
            }
        ],
        "video_path": "./videos/sample_17_proactive.mp4",
    }
]


def _write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_streamingbench_json_real(tmp_path):
    issues = DataIssues()
    items = load_streamingbench(_write_json(tmp_path / "questions_real.json", SB_REAL),
                                context=60, issues=issues)
    assert [i.task for i in items] == [
        "Object Perception", "Counting", "Causal Reasoning", "Text-Rich Understanding"
    ]
    op, ct, cr, tr = items
    assert op.benchmark == "streamingbench" and op.kind == "mcq"
    assert op.category == "Real-Time Visual Understanding"
    assert op.video == "videos/sample_1_real.mp4"
    assert (op.query_time, op.clip_start, op.clip_end) == (190.0, 130.0, 190.0)
    assert op.gold == "B"
    assert op.meta["time_stamp"] == "00:03:10" and op.meta["context"] == 60
    assert op.meta["task_abbr"] == "OP" and op.meta["required_ability"] == "working memory"
    assert op.uid.startswith("sample_1_real@00:03:10#")
    assert op.prompt == (
        MCQ_HEAD_4
        + "\n\nQuestion: What can be seen on the screen right now?\n\nOptions:\n"
        "A. A compass.\nB. A map.\nC. A meter.\nD. A radar.\n\nThe best option is:"
    )
    # options without "A. " get one; "00:24" is 24 s; clip starts at 0
    assert ct.options == ("A. One.", "B. Two.", "C. Three.", "D. Four.")
    assert (ct.query_time, ct.clip_start, ct.clip_end) == (24.0, 0.0, 24.0)
    assert "Options:\nA. One.\nB. Two.\nC. Three.\nD. Four.\n\nThe best option is:" in ct.prompt
    # six options kept, letters to F, instruction says so
    assert cr.gold == "F" and len(cr.options) == 6 and cr.query_time == 8.0
    assert cr.prompt.startswith(
        "You are an advanced video question-answering AI assistant. You have been provided with "
        "some frames from the video and a multiple-choice question related to the video. Your "
        "task is to carefully analyze the video and provide the best answer to question, "
        "choosing from the six options provided. Respond with only the letter "
        "(A, B, C, D, E, or F) of the correct option.\n\nQuestion: Why did he stop?"
    )
    assert cr.prompt.endswith("E. e\nF. f\n\nThe best option is:")
    assert tr.query_time == 12450.0 and tr.clip_start == 12390.0
    # every repair and skip counted
    assert issues["timestamp_two_fields"] == 1
    assert issues["timestamp_unpadded"] == 1
    assert issues["timestamp_field_overflow"] == 1
    assert issues["timestamp_unparseable"] == 1
    assert issues["options_5_to_7"] == 1
    assert issues.notes["options_prefixed"] == 4
    assert dict(issues.skipped) == {"bad_timestamp": 1, "bad_answer": 1, "unknown_task": 1}


def test_streamingbench_context_none_and_filter(tmp_path):
    path = _write_json(tmp_path / "q.json", SB_REAL)
    items = load_streamingbench(path, context=None, tasks=["OP", "Counting"])
    assert [i.task for i in items] == ["Object Perception", "Counting"]
    assert items[0].clip_start == 0.0 and items[0].meta["context"] is None
    assert load_streamingbench(path, context=-1, tasks="CT")[0].clip_start == 0.0
    cat = load_streamingbench(path, tasks=["Real-Time Visual Understanding"])
    assert len(cat) == 4
    with pytest.raises(ConfigError):
        load_streamingbench(path, tasks=["Nonsense"])
    with pytest.raises(InputError):
        load_streamingbench(tmp_path / "missing.json")


def test_streamingbench_json_sqa_history_uses_ground_truth(tmp_path):
    items = load_streamingbench(_write_json(tmp_path / "questions_sqa.json", SB_SQA))
    assert [i.kind for i in items] == ["sqa"] * 3
    assert {i.task for i in items} == {"Sequential Question Answering"}
    assert {i.category for i in items} == {"Contextual Understanding"}
    first, second, third = items
    assert first.prompt == (
        SQA_HEAD_4
        + "\n\n\n\nHere is the question. Answer it and don't confuse it with the previous "
        "conversation.\nQuestion: Who is serving?\n\nOptions:\n"
        "A. Wang.\nB. Fan.\nC. Xu.\nD. Ma.\n\nThe best option is:"
    )
    assert third.prompt == (
        SQA_HEAD_4
        + "\n\nHere are the contextual information related to the video. Please answer the "
        "questions based on the contextual information: "
        "At timestamp 00:00:36, the following question and answer occurred: "
        "Question: Who is serving?; Options: A. Wang., B. Fan., C. Xu., D. Ma.; Answer: A; "
        "At timestamp 00:03:02, the following question and answer occurred: "
        "Question: What is his score now?; Options: A. 2., B. 6., C. 7., D. 4.; Answer: C; "
        "\n\nHere is the question. Answer it and don't confuse it with the previous "
        "conversation.\nQuestion: And his opponent's?\n\nOptions:\n"
        "A. 8.\nB. 7.\nC. 5.\nD. 9.\n\nThe best option is:"
    )
    assert second.meta["history"] == 1 and third.meta["history"] == 2
    assert (third.clip_start, third.clip_end) == (298.0 - 60, 298.0)


def test_streamingbench_json_proactive(tmp_path):
    (item,) = load_streamingbench(_write_json(tmp_path / "p.json", SB_PROACTIVE), context=60)
    assert item.kind == "proactive" and item.task == "Proactive Output"
    assert item.gold == "3" and item.meta["gt_time"] == 29.0
    assert item.meta["poll_times"] == [float(t) for t in range(21, 34)]  # t+1 .. gt+4
    assert (item.query_time, item.clip_start, item.clip_end) == (20.0, 20.0, 33.0)
    assert item.prompt == (
        PROACTIVE_HEAD
        + '\n\nQuestion: When the scoreboard shows 3 points for USA, output "3". Is it the right '
        'time to output "3"? You can only answer yes or no.\n\nThe answer is:\n'
    )
    assert item.meta["final_prompt"] == (
        PROACTIVE_HEAD
        + '\n\nQuestion: When the scoreboard shows 3 points for USA, output "3".'
        "\n\nThe answer is:\n"
    )


def test_proactive_turns_stop_at_first_yes(tmp_path):
    (item,) = load_streamingbench(_write_json(tmp_path / "p.json", SB_PROACTIVE))
    calls, replies = [], []
    turn = proactive_next_turn(item, [])
    while turn is not None:  # what the runner does, with a scripted model
        calls.append((turn.start, turn.end, turn.prompt == item.prompt))
        reply = ("Yes." if turn.end >= 28 else "no") if turn.prompt == item.prompt else "3"
        replies.append((turn, reply))
        turn = proactive_next_turn(item, replies)
    assert calls[0] == (20.0, 21.0, True)
    assert calls[-2:] == [(20.0, 28.0, True), (20.0, 28.0, False)]
    dialog = proactive_dialog(item, replies, [1.0] * len(replies))
    assert len(dialog) == 2 * 8 + 2
    assert dialog[-2]["role"] == "user" and dialog[-1] == {
        "role": "assistant", "content": "3", "time": 28.0, "cost": 1.0
    }
    # never a yes: one poll per second up to gt + 4, then done
    replies = []
    turn = proactive_next_turn(item, [])
    while turn is not None:
        replies.append((turn, "no"))
        turn = proactive_next_turn(item, replies)
    assert [t.end for t, _ in replies] == item.meta["poll_times"]


# ------------------------------------------------------------------------------ StreamingBench CSV

CSV_FIELDS = ["question_id", "task_type", "question", "time_stamp", "answer", "options",
              "frames_required", "temporal_clue_type"]


def _write_csv(path, rows, fields=CSV_FIELDS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def test_streamingbench_csv_real(tmp_path):
    rows = [
        {
            "question_id": "Real-Time Visual Understanding_sample_332_4",
            "task_type": "Object Perception",
            "question": "What is on the table?",
            "time_stamp": "00:01:40",
            "answer": "D",
            "options": "['A. A cup.', 'B. A pen.', 'C. A book.', \"D. Kid's toy.\"]",
            "frames_required": "single",
            "temporal_clue_type": "prior",
        },
        {
            "question_id": "Real-Time Visual Understanding_sample_7_1",
            "task_type": "Action Perception",
            "question": "What is she doing?",
            "time_stamp": "00:00:8",
            "answer": "B",
            "options": "['Running', 'Walking', 'Jumping', 'Sitting', 'Dancing', 'Eating', "
                       "'Sleeping']",
            "frames_required": "multiple",
            "temporal_clue_type": "concurrent",
        },
        {
            "question_id": "Real-Time Visual Understanding_sample_7_2",
            "task_type": "Action Perception",
            "question": "Evil?",
            "time_stamp": "00:00:09",
            "answer": "A",
            "options": "__import__('os').system('echo no')",
        },
        {
            "question_id": "garbage",
            "task_type": "Action Perception",
            "question": "?",
            "time_stamp": "00:00:09",
            "answer": "A",
            "options": "['a', 'b']",
        },
    ]
    issues = DataIssues()
    items = load_streamingbench(_write_csv(tmp_path / "rtvu.csv", rows), issues=issues)
    assert len(items) == 2
    op, acp = items
    assert op.uid == "Real-Time Visual Understanding_sample_332_4"
    assert op.video == "sample_332/video.mp4"
    assert op.options == ("A. A cup.", "B. A pen.", "C. A book.", "D. Kid's toy.")
    assert op.gold == "D" and (op.clip_start, op.clip_end) == (40.0, 100.0)
    assert op.meta["question_id"] == op.uid and op.meta["sample"] == 332
    assert op.meta["frames_required"] == "single" and op.meta["temporal_clue_type"] == "prior"
    assert acp.video == "sample_7/video.mp4" and acp.query_time == 8.0
    assert acp.options[-1] == "G. Sleeping" and len(acp.options) == 7
    assert "choosing from the seven options provided. Respond with only the letter " \
           "(A, B, C, D, E, F, or G) of the correct option." in acp.prompt
    assert issues["options_5_to_7"] == 1 and issues["timestamp_unpadded"] == 1
    assert dict(issues.skipped) == {"bad_options": 1, "bad_question_id": 1}
    prefixed = load_streamingbench(tmp_path / "rtvu.csv", video_prefix="real")
    assert prefixed[0].video == "real/sample_332/video.mp4"


def test_streamingbench_csv_sqa_orders_by_question_index(tmp_path):
    rows = [
        {"question_id": "Sequential Question Answering_sample_3_2",
         "task_type": "Sequential Question Answering", "question": "Second?",
         "time_stamp": "00:02:00", "answer": "B", "options": "['x', 'y', 'z', 'w']"},
        {"question_id": "Sequential Question Answering_sample_3_1",
         "task_type": "Sequential Question Answering", "question": "First?",
         "time_stamp": "00:01:00", "answer": "C", "options": "['p', 'q', 'r', 's']"},
    ]
    items = load_streamingbench(_write_csv(tmp_path / "sqa.csv", rows))
    by_uid = {i.uid: i for i in items}
    second = by_uid["Sequential Question Answering_sample_3_2"]
    assert second.meta["history"] == 1
    assert (
        "At timestamp 00:01:00, the following question and answer occurred: Question: First?; "
        "Options: A. p, B. q, C. r, D. s; Answer: C; \n\n"
    ) in second.prompt
    assert by_uid["Sequential Question Answering_sample_3_1"].meta["history"] == 0


def test_streamingbench_csv_proactive_and_directory(tmp_path):
    fields = ["question_id", "task_type", "question", "time_stamp", "ground_truth_time_stamp",
              "ground_truth_output", "frames_required", "temporal_clue_type"]
    rows = [{"question_id": "Proactive Output_42_1", "task_type": "Proactive Output",
             "question": 'When the goal is scored, output "goal".', "time_stamp": "00:01:00",
             "ground_truth_time_stamp": "00:01:10", "ground_truth_output": "goal"}]
    d = tmp_path / "sb"
    d.mkdir()
    _write_csv(d / "po.csv", rows, fields)
    _write_json(d / "real.json", SB_REAL[:1])
    items = load_streamingbench(d)
    assert [i.kind for i in items] == ["proactive", "mcq", "mcq"]
    po = items[0]
    assert po.video == "sample_42/video.mp4" and po.meta["poll_times"][0] == 61.0
    assert po.meta["poll_times"][-1] == 74.0


# ------------------------------------------------------------------------------ OVO-Bench

OVO = [
    {"id": 1, "task": "EPM", "video": "src/v1.mp4", "realtime": 12.3,
     "question": "Where was the key?", "answer": "On the desk",
     "options": ["In the car", "On the desk", "Under the mat"], "gt": 1},
    {"id": 2, "task": "OCR", "video": "src/v2.mp4", "realtime": 40,
     "question": "What is written?", "answer": "EXIT",
     "options": ["EXIT", "ENTER", "STOP", "PUSH", "PULL"], "gt": 0},
    {"id": 3, "task": "STU", "video": "src/v3.mp4", "realtime": "00:00:8",
     "question": "Is it bright?", "answer": "Perhaps", "options": ["Yes", "No"], "gt": 5},
    {"id": 4, "task": "REC", "video": "src/v4.mp4", "activity": "jump",
     "test_info": [{"realtime": 5.5, "count": 1}, {"realtime": 9, "count": 3},
                   {"realtime": "bad", "count": 4}]},
    {"id": 5, "task": "SSR", "video": "src/v5.mp4", "tutorial": "Make tea",
     "all_steps": ["boil water", "add leaves"],
     "test_info": [{"realtime": 10, "step": "boil water", "type": 1},
                   {"realtime": 20, "step": "add leaves", "type": 0}]},
    {"id": 6, "task": "CRR", "video": "src/v6.mp4", "question": "What colour is the car?",
     "answer": "Red", "ask_time": 3, "clue_time": 15,
     "test_info": [{"realtime": "00:00:4", "type": 0}, {"realtime": 16.2, "type": 1}]},
    {"id": 7, "task": "XYZ", "video": "src/v7.mp4"},
]


def test_ovobench_load(tmp_path):
    issues = DataIssues()
    items = load_ovobench(_write_json(tmp_path / "ovo.json", OVO), issues=issues)
    uids = [i.uid for i in items]
    assert uids == ["1", "2", "4#probe0", "4#probe1", "5#probe0", "5#probe1", "6#probe0",
                    "6#probe1"]
    epm, ocr = items[0], items[1]
    assert (epm.task, epm.category, epm.kind, epm.gold) == ("EPM", "backward", "mcq", "B")
    assert (epm.query_time, epm.clip_start, epm.clip_end) == (12.3, 0.0, 13.0)
    assert epm.options == ("In the car", "On the desk", "Under the mat")
    assert epm.prompt == (  # the official strings: leading newline, blank line, trailing spaces
        "\nQuestion: Where was the key?\n"
        "Options:\n"
        "A. In the car; B. On the desk; C. Under the mat;\n"
        "\n"
        "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
        "Do not include any additional text or explanation in your response.\n"
    )
    assert ocr.category == "realtime" and ocr.clip_end == 40.0 and ocr.gold == "A"
    assert "A. EXIT; B. ENTER; C. STOP; D. PUSH; E. PULL;" in ocr.prompt
    rec0, rec1 = items[2], items[3]
    assert (rec0.kind, rec0.gold, rec0.clip_end, rec0.category) == ("rec", 1, 6.0, "forward")
    assert rec1.gold == 3 and rec1.meta["probe"] == 1 and rec1.meta["id"] == 4
    assert rec0.prompt == (
        "\nYou're watching a video in which people may perform a certain type of action "
        "repetively. \n"
        "The person performing this kind of action are referred to as 'they' in the following "
        "statement.\n"
        "You're task is to count how many times have different people in the video perform "
        "this kind of action in total.\n"
        "One complete motion counts as one. \n"
        "Now, answer the following question: How many times did they jump?\n"
        "Provide your answer as a single number (e.g., 0, 1, 2, 3\u2026) indicating the total "
        "count.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    ssr0, ssr1 = items[4], items[5]
    assert (ssr0.kind, ssr0.gold, ssr1.gold) == ("ssr", "Yes", "No")
    assert ssr1.prompt == (
        "\nYou're watching a tutorial video which contain a sequential of steps. \n"
        "The following is one step from the whole procedures: \n"
        "add leaves\n"
        "Your task is to determine if the man or woman in the video is currently performing "
        "this step.\n"
        "Answer only with \u201cYes\u201d or \u201cNo\u201d.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    crr0, crr1 = items[6], items[7]
    assert (crr0.kind, crr0.gold, crr1.gold, crr1.clip_end) == ("crr", "No", "Yes", 17.0)
    assert crr0.meta["clue_time"] == 15
    assert crr0.prompt == (
        "\nYou're responsible of answering questions based on the video content. \n"
        "The following question are relevant to the latest frames, i.e. the end of the video.\n"
        "What colour is the car?\n"
        "Decide whether existing visual content, especially latest frames, i.e. frames that "
        "near the end of the video, provide enough information for answering the question.\n"
        "Answer only with \u201cYes\u201d or \u201cNo\u201d.\n"
        "Do not include any additional text or explanation in your response.\n"
    )
    assert dict(issues.skipped) == {"bad_answer": 1, "bad_timestamp": 1, "unknown_task": 1}
    assert issues["timestamp_unpadded"] == 1


def test_ovobench_gt_repaired_from_answer_text(tmp_path):
    entry = {"id": 9, "task": "ATR", "video": "v.mp4", "realtime": 3, "question": "Colour?",
             "answer": "Blue", "options": ["Red", "Blue"], "gt": None}
    issues = DataIssues()
    (item,) = load_ovobench(_write_json(tmp_path / "o.json", [entry]), issues=issues)
    assert item.gold == "B" and issues["gt_from_answer"] == 1


def test_ovobench_task_filter(tmp_path):
    path = _write_json(tmp_path / "ovo.json", OVO)
    assert {i.task for i in load_ovobench(path, tasks=["forward"])} == {"REC", "SSR", "CRR"}
    assert [i.uid for i in load_ovobench(path, tasks=["epm"])] == ["1"]
    with pytest.raises(ConfigError):
        load_ovobench(path, tasks=["ABC"])


# ------------------------------------------------------------------------------ duration hook


def _item(**kw):
    base = dict(benchmark="streamingbench", uid="u", task="Counting",
                category="Real-Time Visual Understanding", video="v.mp4", query_time=100.0,
                clip_start=40.0, clip_end=100.0, prompt="p", kind="mcq", gold="A",
                options=("A. x", "B. y"))
    base.update(kw)
    return EvalItem(**base)


def test_fit_to_duration():
    issues = DataIssues()
    it = _item()
    assert fit_to_duration(it, 200.0, issues) is it
    slightly = fit_to_duration(_item(query_time=100.4, clip_end=101.0), 100.0, issues)
    assert slightly.clip_end == 100.0 and issues.total == 0  # ceil() overshoot: silent
    clamped = fit_to_duration(it, 50.0, issues)
    assert (clamped.clip_start, clamped.clip_end) == (0.0, 50.0)
    assert clamped.meta["clamped_from"] == [40.0, 100.0]
    assert issues["past_end_clamped"] == 1
    assert fit_to_duration(it, 50.0, issues, policy="skip") is None
    assert issues.skipped["past_end"] == 1
    assert fit_to_duration(it, 0, issues) is None and issues.skipped["unreadable_video"] == 1
    assert fit_to_duration(it, None, issues) is None
    with pytest.raises(ConfigError):
        fit_to_duration(it, 10.0, policy="drop")


def test_fit_to_duration_proactive():
    po = _item(kind="proactive", task="Proactive Output", query_time=20.0, clip_start=20.0,
               clip_end=33.0, gold="3", options=(),
               meta={"gt_time": 29.0, "poll_times": [float(t) for t in range(21, 34)],
                     "final_prompt": "f"})
    issues = DataIssues()
    cut = fit_to_duration(po, 30.5, issues)
    assert cut.meta["poll_times"][-1] == 30.0 and cut.clip_end == 30.5 and issues.total == 0
    assert fit_to_duration(po, 25.0, issues, policy="skip") is None
    assert issues.skipped["past_end"] == 1


def test_eval_item_validation_and_roundtrip():
    it = _item(meta={"x": 1})
    assert EvalItem.from_dict(json.loads(json.dumps(it.to_dict()))) == it
    assert hash(it) == hash(_item(meta={"other": 2}))
    with pytest.raises(InputError):
        _item(kind="essay")
    with pytest.raises(InputError):
        _item(clip_start=5.0, clip_end=4.0)
    with pytest.raises(InputError):
        _item(query_time=float("inf"))


# ------------------------------------------------------------------------------ answers files


def test_jsonl_append_read_truncated_and_dedupe(tmp_path):
    path = tmp_path / "out" / "answers.jsonl"
    append_jsonl(path, {"uid": "a", "response": "A"})
    append_jsonl(path, {"uid": "b", "response": "B"})
    with open(path, "ab") as f:  # a crash in the middle of a line
        f.write(b'{"uid": "c", "resp')
    issues = DataIssues()
    assert [r["uid"] for r in read_jsonl(path, issues)] == ["a", "b"]
    assert issues["truncated_last_line"] == 1
    append_jsonl(path, {"uid": "a", "response": "second answer"}, fsync=False)
    append_jsonl(path, {"uid": "d", "response": "D \u00e9"})
    issues = DataIssues()
    recs = read_jsonl(path, issues)
    assert [r["uid"] for r in recs] == ["a", "b", "a", "d"]
    assert not issues.counts  # the torn line was dropped before the next record went in
    assert b'"resp' not in path.read_bytes().replace(b'"response"', b"")
    assert [r["response"] for r in dedupe_by_uid(recs, issues)] == ["A", "B", "D \u00e9"]
    assert issues["duplicate_uid"] == 1
    answers = load_answers(path)
    assert answers["a"]["response"] == "A" and set(answers) == {"a", "b", "d"}
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(InputError):
        read_jsonl(tmp_path / "none.jsonl")


def test_pending_shard_and_skip_record(tmp_path):
    items = [_item(uid=f"q{i}") for i in range(20)]
    path = tmp_path / "a.jsonl"
    append_jsonl(path, skip_record(items[0], "unreadable_video", "decode error"))
    assert [i.uid for i in pending_items(items, path)] == [f"q{i}" for i in range(1, 20)]
    shards = [shard_items(items, 3, k) for k in range(3)]
    assert sorted(i.uid for s in shards for i in s) == sorted(i.uid for i in items)
    assert shard_items(items, 3, 1) == shards[1]
    with pytest.raises(ConfigError):
        shard_items(items, 3, 3)
