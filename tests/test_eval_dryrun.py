"""``fluxmem eval ... --dry-run`` end to end on tiny synthetic videos written here with PyAV
(chosen frame counts and rates): one line per query, the published frame rule and prompts, skip
cases, no model loaded."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from fluxmem.cli import main
from fluxmem.eval.ovobench import build_mcq_prompt, build_rec_prompt
from fluxmem.eval.streamingbench import build_mcq_prompt as sb_official_prompt
from fluxmem.eval.streamingbench import build_published_prompt


def _video(path, frames: int, rate: Fraction, size: int = 16):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        image = np.zeros((size, size, 3), np.uint8)
        for i in range(frames):
            image[:] = i % 251
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


OPTIONS = ["A. red", "B. green", "C. blue", "D. grey"]
SB_QUESTIONS = [  # (video, time_stamp)
    ("sample_1", "00:00:01"),
    ("sample_1", "00:01:39"),
    ("sample_1", "00:01:40"),
    ("sample_1", "00:05:00"),  # past the end of the 120 s video: window [44, 120]
    ("sample_1", "00:06:40"),  # t - 256 >= 120 s: dropped by the published reader
    ("sample_2", "00:01:40"),  # 29.97 fps
    ("sample_9", "00:00:10"),  # no such video
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry")
    videos = root / "videos"
    _video(videos / "sample_1" / "video.mp4", 3600, Fraction(30))
    _video(videos / "sample_2" / "video.mp4", 2998, Fraction(30000, 1001))
    subsets = {}
    for k, (video, ts) in enumerate(SB_QUESTIONS):
        subsets.setdefault(video, []).append({
            "task_type": "Object Perception", "question": f"What colour is it? ({k}) ", "time_stamp": ts,
            "answer": "A", "options": OPTIONS})
    sb = root / "questions_real.json"
    sb.write_text(json.dumps([{"video_path": f"./{v}/video.mp4", "questions": qs} for v, qs in subsets.items()]))
    # OVO-Bench: a source video, and the released pre-cut clips for the published protocol
    _video(videos / "src.mp4", 9000, Fraction(30))
    _video(videos / "chunked_videos" / "0.mp4", 3000, Fraction(30))  # MCQ id 0, clip [0, 100)
    _video(videos / "chunked_videos" / "5_0.mp4", 24, Fraction(24))  # REC id 5 probe 0: a 1 s clip
    ovo = root / "ovo_bench_new.json"
    ovo.write_text(json.dumps([
        {"id": 0, "task": "EPM", "video": "src.mp4", "realtime": 99.5, "question": "Where is it? ",
         "answer": "here", "options": ["here", "there"], "gt": 0},
        {"id": 5, "task": "REC", "video": "src.mp4", "activity": "jump",
         "test_info": [{"realtime": 1, "count": 1}, {"realtime": 280.2, "count": 2}]},  # probe 1: no clip
    ]))
    return {"root": root, "videos": videos, "sb": sb, "ovo": ovo}


def _dry(benchmark, annotations, videos, out, protocol, *extra):
    argv = ["eval", benchmark, "--protocol", protocol, "--dry-run", "--annotations", str(annotations),
            "--videos", str(videos), "--out", str(out), "--model", "no/such-model", *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dry run loaded a model")

    monkeypatch.setattr("fluxmem.loading.load_model", refuse)
    monkeypatch.setattr("fluxmem.eval.runner._load_model", refuse)


def test_streamingbench_published_dry_run(data, tmp_path, capsys):
    lines = _dry("streamingbench", data["sb"], data["videos"], tmp_path / "pub", "published")
    assert "7 queries (2 skipped" in capsys.readouterr().out
    assert len(lines) == len(SB_QUESTIONS) and len({x["id"] for x in lines}) == len(lines)
    fields = {"id", "task", "video", "time", "prompt", "window", "frame_times", "second_per_grid_ts",
              "min_pixels", "max_pixels", "issue"}
    assert all(fields <= set(x) for x in lines)
    by_time = {(x["video"].split("/")[-2], x["time"]): x for x in lines}
    t1, t99, t100 = by_time["sample_1", 1.0], by_time["sample_1", 99.0], by_time["sample_1", 100.0]
    for k, x in enumerate(lines):
        assert x["prompt"] == build_published_prompt(f"What colour is it? ({k}) ", OPTIONS)
        assert x["min_pixels"] == 12544
    assert t1["frame_times"] == [0.0, 1.0] and t1["window"] == [0.0, 1.0]
    assert t1["second_per_grid_ts"] == [2 / (2 / 31 * 30)]  # 1.0333: two frames 1 s apart, compressed
    assert t99["frame_times"] == [float(s) for s in range(2, 100)]
    assert t100["frame_times"] == [float(s) for s in range(1, 101)]
    assert t100["second_per_grid_ts"] == [2 / (100 / 3001 * 30)] and t100["max_pixels"] == 401408
    past = by_time["sample_1", 300.0]
    assert past["window"] == [44.0, 120.0] and past["issue"] is None  # not the last 256 s
    assert past["frame_times"][-1] == 3599 / 30 and len(past["frame_times"]) == 76
    dropped = by_time["sample_1", 400.0]
    assert "dropped by the published reader" in dropped["issue"] and dropped["frame_times"] == []
    assert dropped["second_per_grid_ts"] is None and dropped["prompt"]
    ntsc = by_time["sample_2", 100.0]
    # frame index / (30000 / 1001) fps: the rate is rounded before the division, so not 30 * 1001 / 30000 exactly
    assert len(ntsc["frame_times"]) == 100 and ntsc["frame_times"][0] == pytest.approx(30 * 1001 / 30000)
    assert ntsc["frame_times"][-1] == pytest.approx(2997 * 1001 / 30000)
    missing = by_time["sample_9", 10.0]
    assert missing["issue"].startswith("missing_video") and missing["frame_times"] == []
    run = json.loads((tmp_path / "pub" / "dry_run.json").read_text())
    assert run["protocol"] == "published" and run["protocol_settings"]["min_frames"] == 2
    assert run["skipped"] == {"missing_video": 1, "window_without_frames": 1} and run["queries"] == 7


def test_streamingbench_fluxmem_dry_run_differs_where_documented(data, tmp_path):
    lines = _dry("streamingbench", data["sb"], data["videos"], tmp_path / "ours", "fluxmem")
    by_time = {(x["video"].split("/")[-2], x["time"]): x for x in lines}
    t100 = by_time["sample_1", 100.0]
    # every frame from 0 s to 100 s (the oldest kept), padded to an even count, the true spacing
    assert t100["frame_times"] == [float(s) for s in range(101)] + [100.0]
    assert t100["second_per_grid_ts"] == [2.0]
    assert t100["prompt"] == sb_official_prompt("What colour is it? (2)", OPTIONS)
    past = by_time["sample_1", 300.0]  # clamped: the last 256 s of the video, counted
    assert past["window"] == [0.0, 120.0] and past["warnings"] == ["past_end_clamped"]
    assert by_time["sample_1", 400.0]["issue"] is None  # clamped too, not dropped


def test_ovobench_published_dry_run_reads_the_clips(data, tmp_path):
    lines = _dry("ovobench", data["ovo"], data["videos"], tmp_path / "pub", "published")
    assert [x["id"] for x in lines] == ["0", "5#probe0", "5#probe1"]
    mcq, rec0, rec1 = lines
    assert mcq["video"].endswith("chunked_videos/0.mp4") and mcq["time"] == 99.5
    assert mcq["prompt"] == build_mcq_prompt("Where is it? ", ["here", "there"], "published")
    assert mcq["window"] == [0.0, 100.0]
    assert mcq["frame_times"] == [(30 * s - 1) / 30 for s in range(1, 101)]  # 0.967 … 99.967
    assert mcq["second_per_grid_ts"] == [2.0]
    assert rec0["video"].endswith("chunked_videos/5_0.mp4") and rec0["prompt"] == build_rec_prompt("jump", "published")
    assert rec0["frame_times"] == [0.0, 0.0, 0.0, 23 / 24] and rec0["second_per_grid_ts"] == [0.5]
    assert rec1["issue"].startswith("missing_video") and "5_1.mp4" in rec1["issue"]


def test_ovobench_fluxmem_dry_run_reads_the_source(data, tmp_path):
    lines = _dry("ovobench", data["ovo"], data["videos"], tmp_path / "ours", "fluxmem")
    mcq, rec0, rec1 = lines
    assert mcq["video"].endswith("src.mp4") and mcq["window"] == [0.0, 100.0]
    assert mcq["frame_times"] == [float(s) for s in range(101)] + [100.0]
    assert rec1["window"] == [25.0, 281.0] and len(rec1["frame_times"]) == 256
    assert rec1["frame_times"][-1] == 281.0 and rec1["second_per_grid_ts"] == [2.0]
    assert rec0["frame_times"] == [0.0, 1.0]


def test_dry_run_errors(data, tmp_path, capsys):
    base = ["eval", "streamingbench", "--dry-run", "--annotations", str(data["sb"]), "--videos", str(data["videos"])]
    assert main([*base, "--out", str(tmp_path / "o"), "--protocol", "published", "--fps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--protocol published fixes every setting; drop --fps 2.0" in err and len(err.strip().splitlines()) == 1
    assert main([*base[:2], "--annotations", str(data["sb"]), "--videos", str(data["videos"]),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--model is required" in capsys.readouterr().err
