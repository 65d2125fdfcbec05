"""Small benchmark fixtures in the official formats, over synthetic videos.

They let anyone (and the tests) run ``fluxmem eval streamingbench|ovobench`` end to end without
the real data: a dozen questions or so over videos of a few minutes drawn by
:func:`fluxmem.video.synthetic.synthetic_frame` (no test helper is needed at run time), with the messy cases the real data holds
(timestamps such as ``"00:24"``, a question past the end of its video, five options, a missing
video, a truncated video, an unparseable timestamp). The answers are not meant to be knowable by a
random model; the fixtures exercise the protocol, not the model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

#: StreamingBench real-time questions of the fixture: (task_type, time_stamp, n_options, video).
_SB_RTVU = (
    ("Object Perception", "00:00:30", 4, "sample_1"),
    ("Causal Reasoning", "00:01:10", 4, "sample_1"),
    ("Clips Summarize", "00:02:00", 4, "sample_1"),
    ("Attribute Perception", "00:24", 4, "sample_1"),  # MM:SS
    ("Counting", "00:00:8", 4, "sample_1"),  # unpadded seconds
    ("Spatial Understanding", "00:03:30", 4, "sample_1"),  # past the end (the video is 180 s)
    ("Text-Rich Understanding", "00:02:30", 5, "sample_1"),  # five options
    ("Event Understanding", "00:00:50", 4, "sample_9"),  # missing video
    ("Prospective Reasoning", "00:00:40", 4, "sample_4"),  # past the readable part of a truncated video
    ("Action Perception", "soon", 4, "sample_1"),  # unparseable timestamp
)

_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "grey")


def _frames(count: int, size: int):
    """``[count, size, size, 3]`` uint8 frames, each saying which frame it is."""
    import numpy as np

    from ..video.synthetic import synthetic_frame

    return np.stack([synthetic_frame(i, size) for i in range(count)])


def _write(path: Path, frames, fps: float, *, faststart: bool = False) -> None:
    from fractions import Fraction

    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else None
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qscale": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def _videos(root: Path, names: dict[str, float], fps: float, size: int) -> None:
    longest = max(names.values())
    frames = _frames(round(longest * fps), size)
    for name, seconds in names.items():
        _write(root / name, frames[: round(seconds * fps)], fps)


def _truncated_video(path: Path, seconds: float, fps: float, size: int) -> None:
    """An MP4 whose header (written first, "faststart") announces ``seconds`` of video but whose
    data stops after about ten seconds: a download that broke off. Its first seconds decode, the rest
    does not."""
    _write(path, _frames(round(seconds * fps), size), fps, faststart=True)
    data = path.read_bytes()
    media = data.find(b"mdat") + 4  # the frames' data follows the header
    path.write_bytes(data[: media + (len(data) - media) * 10 // round(seconds)])  # about ten seconds of it


def write_streamingbench_fixture(
    root: str | Path, *, fps: float = 1.0, size: int = 112
) -> dict[str, Path]:
    """A StreamingBench fixture under ``root``: ``annotations/`` (a real-time JSON file in the
    repo's layout, a nested Sequential-QA JSON file, a Proactive-Output CSV file in the dataset
    card's layout) and ``videos/sample_N/video.mp4``. Returns ``{"annotations", "videos"}``.

    Answerable: 6 real-time questions (one past the end, clamped; one with five options), 3
    Sequential-QA questions, 1 proactive item. Skipped and counted: a question on a missing video,
    one past the readable part of a truncated video (its header announces 180 s; the data stops
    after about ten), one with an unparseable timestamp.
    """
    root = Path(root)
    videos, ann = root / "videos", root / "annotations"
    shutil.rmtree(ann, ignore_errors=True)
    ann.mkdir(parents=True)
    _videos(videos, {"sample_1/video.mp4": 180, "sample_2/video.mp4": 120}, fps, size)
    _truncated_video(videos / "sample_4/video.mp4", 180, fps, size)

    subsets: dict[str, list[dict[str, Any]]] = {}
    for i, (task, ts, n, video) in enumerate(_SB_RTVU):
        options = [f"{'ABCDEFG'[k]}. {_COLOURS[(i + k) % len(_COLOURS)]}" for k in range(n)]
        subsets.setdefault(video, []).append(
            {
                "task_type": task,
                "question": f"What colour is the moving square? ({task})",
                "time_stamp": ts,
                "answer": "ABCDE"[i % n],
                "options": options,
                "required_ability": "synthetic",
            }
        )
    rtvu = [{"video_path": f"./{v}/video.mp4", "questions": qs} for v, qs in subsets.items()]
    (ann / "Real_Time_Visual_Understanding.json").write_text(json.dumps(rtvu, indent=1))

    sqa_video = [
        {
            "video_path": "./sample_2/video.mp4",
            "questions": [
                {
                    "task_type": "Sequential Question Answering",
                    "question": f"Where is the square now? (turn {k + 1})",
                    "time_stamp": ts,
                    "answer": "ABCD"[k],
                    "options": ["left", "centre", "right", "nowhere"],  # no "A. " prefixes
                }
            ],
        }
        for k, ts in enumerate(("00:00:20", "00:00:50", "00:01:30"))
    ]
    (ann / "Sequential_Question_Answering.json").write_text(json.dumps([sqa_video], indent=1))

    fields = ["question_id", "task_type", "question", "time_stamp", "answer", "options",
              "frames_required", "temporal_clue_type", "ground_truth_time_stamp",
              "ground_truth_output"]
    with open(ann / "Proactive_Output.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerow(
            {
                "question_id": "Proactive Output_sample_2_1",
                "task_type": "Proactive Output",
                "question": "Tell me when the square reaches the right edge.",
                "time_stamp": "00:00:40",
                "answer": "",
                "options": "[]",
                "frames_required": "",
                "temporal_clue_type": "",
                "ground_truth_time_stamp": "00:00:43",
                "ground_truth_output": "right edge",
            }
        )
    return {"annotations": ann, "videos": videos}


def write_ovobench_fixture(root: str | Path, *, fps: float = 1.0, size: int = 112) -> dict[str, Path]:
    """An OVO-Bench fixture under ``root``: ``ovo_bench_new.json`` (v2 layout) and ``videos/``.
    Returns ``{"annotations", "videos"}``.

    Answerable: one question for each of the nine multiple-choice tasks, a tenth past the end of
    its video (clamped), REC (3 probes), SSR (2 probes), CRR (2 probes). Skipped and counted: a
    question on a missing video, one on a file that is not a video.
    """
    root = Path(root)
    videos = root / "videos"
    _videos(videos, {"a.mp4": 180, "b.mp4": 90}, fps, size)
    (videos / "broken.mp4").write_bytes(b"this is not a video\n" * 64)
    entries: list[dict[str, Any]] = []
    mcq = (("EPM", 30), ("ASI", 60.5), ("HLD", 100), ("STU", 20), ("OJR", 45.2), ("ATR", 70),
           ("ACR", 10), ("OCR", 150), ("FPD", 175))
    for i, (task, t) in enumerate(mcq):
        options = [_COLOURS[(i + k) % len(_COLOURS)] for k in range(4)]
        entries.append({"id": i, "task": task, "video": "a.mp4", "realtime": t,
                        "question": f"What colour is the square? ({task})", "answer": options[i % 4],
                        "options": options, "gt": i % 4})
    entries.append({"id": 20, "task": "STU", "video": "b.mp4", "realtime": 120.0,  # past the end
                    "question": "Where is the square?", "answer": "left",
                    "options": ["left", "right", "top"], "gt": 0})
    entries.append({"id": 21, "task": "OJR", "video": "missing.mp4", "realtime": 12.0,
                    "question": "What is shown?", "answer": "a square",
                    "options": ["a square", "a circle"], "gt": 0})
    entries.append({"id": 22, "task": "ACR", "video": "broken.mp4", "realtime": 5.0,
                    "question": "What happens?", "answer": "nothing",
                    "options": ["nothing", "something"], "gt": 0})
    entries.append({"id": 30, "task": "REC", "video": "a.mp4", "activity": "move the square",
                    "test_info": [{"realtime": 20, "count": 1}, {"realtime": 40, "count": 2},
                                  {"realtime": 60.5, "count": 3}]})
    entries.append({"id": 31, "task": "SSR", "video": "b.mp4", "tutorial": "moving a square",
                    "all_steps": "1. move left 2. move right",
                    "test_info": [{"realtime": 30, "step": "move the square right", "type": 1},
                                  {"realtime": 60, "step": "paint the square", "type": 0}]})
    entries.append({"id": 32, "task": "CRR", "video": "a.mp4", "question": "Which colour is the square?",
                    "answer": "red", "ask_time": 10, "clue_time": 50,
                    "test_info": [{"realtime": 40, "type": 0}, {"realtime": 80, "type": 1}]})
    path = root / "ovo_bench_new.json"
    path.write_text(json.dumps(entries, indent=1))
    return {"annotations": path, "videos": videos}
