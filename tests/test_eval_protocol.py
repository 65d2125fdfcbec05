"""The published protocol pinned down: prompts byte for byte, the frame rule with hand-computed
frame lists, the reported spacing, pixel limits, the reply chain; and the protocols' settings.

The vectors published with the protocol's specification (``tests/data/published_prompts.json``,
``published_frames.json``, copied from the spec unchanged) are checked too."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fluxmem.errors import ConfigError
from fluxmem.eval.ovobench import (
    build_crr_prompt,
    build_mcq_prompt,
    build_rec_prompt,
    build_ssr_prompt,
)
from fluxmem.eval.protocol import (
    moviepy_duration,
    published_frames,
    published_letter,
    published_max_pixels,
    published_time_stamp,
    resolve_protocol,
    temporal_positions,
)
from fluxmem.eval.streamingbench import build_published_prompt

VECTORS = Path(__file__).resolve().parent / "data"
NTSC, NTSC2 = 30000 / 1001, 60000 / 1001


def _vectors(name):
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------- prompts

SB_EXPECTED = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames from "
    "the video and a multiple-choice question related to the video. Your task is to carefully analyze the video "
    "and provide the best answer to question, choosing from the four options provided. Respond with only the "
    "letter (A, B, C, or D) of the correct option.\n\nQuestion:  What is on the table? \n\nOptions:\n"
    "A. A cup.\nB. A  book.\nC. C pen\nD. Nothing.\nE. E\n\nThe best option is:"
)


def test_streamingbench_published_prompt_literal():
    # question verbatim (spaces kept); options kept when they start with their letter and a dot,
    # else given "L. "; five options still say "four"
    options = ["A. A cup.", "B. A  book.", "C pen", "D. Nothing.", "E"]
    assert build_published_prompt(" What is on the table? ", options) == SB_EXPECTED
    # the CSV cell: a Python list literal, or (unreadable) lines
    assert build_published_prompt(" What is on the table? ", repr(options)) == SB_EXPECTED
    assert build_published_prompt("Q?", "x\ny").endswith("Options:\nA. x\nB. y\n\nThe best option is:")
    assert build_published_prompt("Q?", "nan") == (
        "You are an advanced video question-answering AI assistant. You have been provided with a video and a "
        "question related to the video. Your task is to carefully analyze the video and provide the answer to the "
        "question. \n\nQuestion: Q?\n\nAnswer:")


def test_ovobench_published_prompts_literal():
    i12, end = "\n" + " " * 12, "\n" + " " * 8
    assert build_mcq_prompt("Where is the microwave? ", ["on the table", "19\nFIREMAN"], "published") == (
        "\n            Question: Where is the microwave? \n            Options:\n"
        "            A. on the table; B. 19\nFIREMAN;\n"
        "            Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
        "            Do not include any additional text or explanation in your response.\n        ")
    assert build_rec_prompt("jump", "published") == (
        " " + i12 + "You're watching a video in which people may perform a certain type of action repetively. "
        + i12 + "The person performing this kind of action are referred to as 'they' in the following statement."
        + i12 + "You're task is to count how many times have different people in the video perform this kind of "
        "action in total." + i12 + "One complete motion counts as one. " + i12
        + "Now, answer the following question: How many times did they jump?" + i12
        + "Provide your answer as a single number (e.g., 0, 1, 2, 3\u2026) indicating the total count." + i12
        + "Do not include any additional text or explanation in your response." + end)
    assert build_ssr_prompt("add leaves", "published") == (
        i12 + "You're watching a tutorial video which contain a sequential of steps. " + i12
        + "The following is one step from the whole procedures: " + i12 + "add leaves" + i12
        + "Your task is to determine if the man or woman in the video is currently performing this step." + i12
        + 'Answer only with "Yes" or "No".' + i12
        + "Do not include any additional text or explanation in your response." + end)
    assert build_crr_prompt("What colour is the car?", "published") == (
        i12 + "You're responsible of answering questions based on the video content. " + i12
        + "The following question are relevant to the latest frames, i.e. the end of the video." + i12
        + "What colour is the car?" + i12
        + "Decide whether existing visual content, especially latest frames, i.e. frames that near the end of "
        "the video, provide enough information for answering the question." + i12
        + 'Answer only with "Yes" or "No".' + i12
        + "Do not include any additional text or explanation in your response." + end)
    for prompt in (build_mcq_prompt("q", ["a", "b"], "published"), build_ssr_prompt("s", "published"),
                   build_crr_prompt("q", "published")):
        assert prompt.isascii() and "\u201c" not in prompt


def test_published_prompt_vectors():
    data = _vectors("published_prompts.json")
    sb = data["streamingbench"]
    for ex in sb["examples"]:
        assert build_published_prompt(ex["question"], ex["options"]) == ex["prompt"]
    ovo = data["ovobench"]
    for ex in ovo["MCQ"]["examples"]:
        assert build_mcq_prompt(ex["question"], ex["options"], "published") == ex["prompt"]
    for ex in ovo["REC"]["examples"]:
        assert build_rec_prompt(ex["activity"], "published") == ex["prompt"]
    for ex in ovo["SSR"]["examples"]:
        assert build_ssr_prompt(ex["step"], "published") == ex["prompt"]
    for ex in ovo["CRR"]["examples"]:
        assert build_crr_prompt(ex["question"], "published") == ex["prompt"]


# ------------------------------------------------------------------------------ the frame rule


def _sb(fps, t, n_frames=None):
    n_frames = n_frames or int(3600 * fps)
    return published_frames(n_frames, fps, max(0.0, t - 256.0), t, min_frames=2)


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_published_frames_integer_rates(fps):
    # t < 256: the whole-second count rounded down to even, the oldest dropped, anchored at t
    assert _sb(fps, 1).indices == [0, fps]
    assert _sb(fps, 2).indices == [fps, 2 * fps]
    assert _sb(fps, 99).indices == [fps * k for k in range(2, 100)]
    assert _sb(fps, 100).indices == [fps * k for k in range(1, 101)]
    assert _sb(fps, 255).indices == [fps * k for k in range(2, 256)]
    assert _sb(fps, 256).indices == [fps * k for k in range(1, 257)]
    assert _sb(fps, 300).indices == [fps * k for k in range(45, 301)]
    # reported spacing: frames / window frames · F
    assert _sb(fps, 1).second_per_grid_ts == [2 / (2 / (fps + 1) * fps)]
    assert _sb(fps, 99).second_per_grid_ts == [2 / (98 / (99 * fps + 1) * fps)]
    assert _sb(fps, 300).second_per_grid_ts == [2 / (256 / (256 * fps + 1) * fps)]
    assert _sb(fps, 100).times == [float(k) for k in range(1, 101)]


def test_published_frames_ntsc_rates():
    # 29.97: steps alternate 29/30 native frames; a full window of 7672 frames gives 254 frames
    p = _sb(NTSC, 1)
    assert p.indices == [0, 29] and p.times[1] == pytest.approx(0.9676333, abs=1e-6)  # 29 / 29.97, to 7 decimals
    assert _sb(NTSC, 2).indices == [29, 59]
    p99 = _sb(NTSC, 99)
    assert len(p99.indices) == 98 and p99.indices[:3] == [60, 90, 120] and p99.indices[-2:] == [2937, 2967]
    p100 = _sb(NTSC, 100)
    assert len(p100.indices) == 100 and p100.indices[:3] == [30, 60, 90] and p100.indices[-2:] == [2967, 2997]
    assert p100.times[-1] == pytest.approx(99.9999, abs=1e-4)  # 2997 / 29.97..., to 4 decimals
    p255 = _sb(NTSC, 255)
    assert len(p255.indices) == 254 and p255.indices[:2] == [60, 90] and p255.indices[-1] == 7642
    p256 = _sb(NTSC, 256)
    assert len(p256.indices) == 256 and p256.indices[:2] == [30, 60] and p256.indices[-1] == 7672
    p300 = _sb(NTSC, 300)
    assert len(p300.indices) == 256 and p300.indices[:3] == [1349, 1379, 1409] and p300.indices[-1] == 8991
    assert p300.second_per_grid_ts[0] == 2.000175260416667
    assert len(_sb(NTSC, 268).indices) == 254  # a 7672-frame full window
    # 59.94
    assert _sb(NTSC2, 1).indices == [0, 59] and _sb(NTSC2, 2).indices == [59, 119]
    p = _sb(NTSC2, 255)
    assert len(p.indices) == 254 and p.indices[:3] == [119, 179, 239] and p.indices[-2:] == [15224, 15284]
    p = _sb(NTSC2, 300)
    assert len(p.indices) == 256 and p.indices[:3] == [2697, 2757, 2817] and p.indices[-2:] == [17922, 17982]


def test_published_frames_positions():
    p = _sb(30, 99)
    positions = temporal_positions(len(p.indices), p.second_per_grid_ts[0])
    assert positions[:3] == [0, 4, 8] and positions[-3:] == [185, 189, 194]  # stretched from … 192
    assert p.second_per_grid_ts[0] == 2.0210884353741494


def test_published_frame_vectors():
    # the vectors' times and spacings were printed by the published code in decimal: compared to
    # the digits printed (atol / rel_tol), while indices and positions are compared exactly
    data = _vectors("published_frames.json")
    for e in data["streamingbench"]:
        p = published_frames(e["video_frames"], e["video_fps"], e["video_start"], e["video_end"], min_frames=2)
        assert p.indices == e["indices"], (e["native_fps"], e["t"])
        assert np.allclose(p.times, e["times"], atol=1e-6, rtol=0)
        assert math.isclose(p.second_per_grid_ts[0], e["second_per_grid_t"], rel_tol=1e-9)
        assert temporal_positions(len(p.indices), p.second_per_grid_ts[0]) == e["temporal_positions"]
    for e in data["ovobench"]:
        duration = moviepy_duration(round(e["clip_frames"] / e["video_fps"] * 1e6))  # no audio: D = N/F printed
        assert duration == e["clip_duration"], (e["native_fps"], e["realtime"])
        start = max(0, duration - 256.0)
        assert start == e["video_start"]
        p = published_frames(e["clip_frames"], e["video_fps"], start, None, min_frames=4)
        assert p.indices == e["indices"]
        assert np.allclose(p.times, e["times"], atol=1e-6, rtol=0)
        assert math.isclose(p.second_per_grid_ts[0], e["second_per_grid_t"], rel_tol=1e-9)
        assert temporal_positions(len(p.indices), p.second_per_grid_ts[0]) == e["temporal_positions"]


def test_ovo_clip_cases():
    # under 4 s: min_frames 4 repeats frame 0
    assert published_frames(30, 30.0, 0, None, min_frames=4).indices == [0, 0, 0, 29]
    assert published_frames(60, 30.0, 0, None, min_frames=4).indices == [0, 0, 29, 59]
    # audio outlasting the video: D = 317.03 > N/F = 317.0 -> start frame 1831, 7679 frames, 254 frames
    assert moviepy_duration(317_025_000) == 317.03  # printed 05:17.03
    p = published_frames(9510, 30.0, max(0, moviepy_duration(317_025_000) - 256.0), None, min_frames=4)
    assert len(p.indices) == 254 and p.indices[0] == 9509 - 30 * 253 and p.indices[-1] == 9509
    assert p.window[0] == pytest.approx(61.03)  # a difference of seconds in binary floating point
    # 29.97 clip of 7673 frames: D printed 04:16.02, start 0.02 s, 254 frames from 3.003 s
    d = moviepy_duration(round(7673 / NTSC * 1e6))
    assert d == 256.02
    p = published_frames(7673, NTSC, max(0, d - 256.0), None, min_frames=4)
    assert len(p.indices) == 254 and p.indices[:2] == [90, 120] and p.indices[-1] == 7672


def test_skip_cases():
    # past the end: window [t - 256, duration], anchored at the last frame
    p = published_frames(3000, 30.0, 300 - 256.0, 300, min_frames=2)  # 100 s video, asked at 300 s
    assert p.issue is None and p.window == (44.0, 100.0) and p.indices[-1] == 2999 and len(p.indices) == 56
    # dropped when t - 256 >= duration
    p = published_frames(3000, 30.0, 400 - 256.0, 400, min_frames=2)
    assert p.issue and "dropped" in p.issue and p.indices == [] and p.second_per_grid_ts is None
    # a window of one native frame rounds to 0 frames: dropped
    assert published_frames(1, 30.0, 0.0, 5, min_frames=2).issue
    assert published_frames(30, 1.0, 0.0, 0, min_frames=2).issue  # asked at 0 s: one frame


def test_published_time_stamp_and_letter():
    assert published_time_stamp("00:12450") == 12450 and published_time_stamp("0:07:40") == 460
    assert published_time_stamp("00:00:8") == 8 and published_time_stamp("1:02.5") is None
    assert published_time_stamp("1:2:3:4") is None and published_time_stamp("soon") is None
    vectors = {"A": "A", " b ": "B", "A.": "A", "B. The man is cooking": "B", "A. The woman (in red)": "D",
               "Answer: C": "A", "The answer is a man": "A", "optional B": "A", "I think B is the best": "B",
               "(C)": "C", "The best option is: C": "C", "None of them": "", "1": ""}
    for reply, letter in vectors.items():
        assert published_letter(reply) == letter, reply


def test_pixel_limits():
    assert published_max_pixels(256) == 401408 and published_max_pixels(2) == 401408
    assert published_max_pixels(600) == int(90316800 / 600 * 2)
    assert published_max_pixels(100000) == int(12544 * 1.05)


def test_protocol_settings():
    pub = resolve_protocol("published", "streamingbench")
    assert (pub.context, pub.min_frames, pub.min_pixels, pub.max_pixels, pub.max_new_tokens) == (
        256.0, 2, 12544, 401408, 128)
    assert pub.generation() == {"do_sample": False, "repetition_penalty": 1.05}
    assert pub.scoring[0] == "published" and pub.past_end == "published"
    ovo = resolve_protocol("published", "ovobench")
    assert (ovo.min_frames, ovo.clips, ovo.prompts) == (4, "chunked", "published")
    assert resolve_protocol("official", "streamingbench").context == 60.0
    assert resolve_protocol("official", "ovobench").context is None
    ours = resolve_protocol("fluxmem", "streamingbench", context=0, max_pixels=12544)
    assert ours.context is None and ours.overrides == ("context", "max_pixels")
    with pytest.raises(ConfigError, match="--protocol published fixes every setting; drop --fps 2.0 "):
        resolve_protocol("published", "streamingbench", fps=2.0)
    restated = resolve_protocol("published", "streamingbench", context=256, fps=1, max_frames=256, min_pixels=12544,
                                max_pixels=401408, max_new_tokens=128, repetition_penalty=1.05)
    assert restated == pub and restated.overrides == ()
    with pytest.raises(ConfigError, match="--context must be seconds >= 0"):
        resolve_protocol("fluxmem", "streamingbench", context=-5)
    with pytest.raises(ConfigError, match="--protocol must be one of"):
        resolve_protocol("paper", "ovobench")


def test_reported_spacing_reaches_the_processor():
    """The frames and rate the runner hands to fluxmem.inference give the processor
    ``second_per_grid_ts = 2 / sample_fps`` (the published stretched value, not 2.0)."""
    from fluxmem.inference import SamplingOptions, build_inputs, build_messages
    from fluxmem.testing import build_processor

    plan = published_frames(31, 1.0, 0.0, 30, min_frames=2)  # 30 of 31 frames: reported 31/30 s apart
    frames = np.zeros((len(plan.indices), 32, 32, 3), np.uint8)
    sampling = SamplingOptions(fps=plan.sample_fps, min_pixels=12544, max_pixels=published_max_pixels(30))
    inputs = build_inputs(build_processor(), build_messages(frames, "q", sampling))
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx(plan.second_per_grid_ts, rel=1e-6)
    assert plan.second_per_grid_ts[0] == pytest.approx(2 * 31 / 30)  # 2 / (30 / 31): other rounding than 62 / 30
    assert inputs["video_grid_thw"].tolist() == [[15, 8, 8]]  # 32x32 -> 112x112, as smart_resize at 12544


def test_ovobench_published_overall_counts_a_missing_category_as_zero(tmp_path):
    from fluxmem.eval.benchmark import get_benchmark
    from fluxmem.eval.ovobench import load_ovobench

    path = tmp_path / "ovo.json"
    path.write_text(json.dumps([
        {"id": 1, "task": "EPM", "video": "v.mp4", "realtime": 5, "question": "q", "options": ["a", "b"], "gt": 0},
        {"id": 2, "task": "STU", "video": "v.mp4", "realtime": 5, "question": "q", "options": ["a", "b"], "gt": 1},
    ]))
    items = load_ovobench(path)
    answers = {"1": {"uid": "1", "response": "A"}, "2": {"uid": "2", "response": "A"}}
    bench = get_benchmark("ovobench")
    pub = bench.score(items, answers, None, resolve_protocol("published", "ovobench"))
    assert pub["overall"] == 50.0 and pub["extra"]["published_overall"] == 100 / 3
    ours = bench.score(items, answers, None, resolve_protocol("fluxmem", "ovobench"))
    assert ours["overall"] == 50.0 and "published_overall" not in ours["extra"]
