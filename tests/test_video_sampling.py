"""Pure frame-index arithmetic: real-time (end-anchored) and offline (Qwen) sampling."""

import pytest
import torch

from fluxmem.errors import ConfigError
from fluxmem.video import offline_frame_indices, realtime_frame_indices, sampled_fps

# --- real-time sampling ---------------------------------------------------------------------


def test_realtime_window_exact_spacing():
    assert realtime_frame_indices(25, end_time=10, fps=1, window=4) == [150, 175, 200, 225, 250]


def test_realtime_clamps_to_last_frame_of_video():
    # A 250-frame video has no frame 250: the anchor is frame 249 and the window follows it.
    assert realtime_frame_indices(25, end_time=10, fps=1, window=4, total_frames=250) == [149, 174, 199, 224, 249]
    assert realtime_frame_indices(25, end_time=99, fps=1, window=2, total_frames=250) == [199, 224, 249]


def test_realtime_max_frames_keeps_newest():
    assert realtime_frame_indices(25, end_time=10, fps=1, window=4, max_frames=3) == [200, 225, 250]
    assert realtime_frame_indices(25, end_time=10, fps=1, max_frames=2) == [225, 250]


def test_realtime_without_window_goes_back_to_start_time():
    assert realtime_frame_indices(10, end_time=3, fps=2) == [0, 5, 10, 15, 20, 25, 30]
    # start_time clamps: 1.2 s is frame 12, so frame 10 is out.
    assert realtime_frame_indices(10, end_time=3, fps=2, start_time=1.2) == [15, 20, 25, 30]
    # window and start_time: the later bound wins.
    assert realtime_frame_indices(10, end_time=3, fps=2, window=2.5, start_time=1.2) == [15, 20, 25, 30]


def test_realtime_non_integer_ratio_rounds_each_offset():
    # 30 fps sampled at 4 fps: offsets round(k * 7.5) = 0, 8, 15, 22, 30 (round half to even).
    assert realtime_frame_indices(30, end_time=5, fps=4, window=1) == [120, 128, 135, 142, 150]


def test_realtime_fps_above_native_drops_duplicates():
    indices = realtime_frame_indices(4, end_time=2, fps=10, window=1)
    assert indices == [4, 5, 6, 7, 8]
    assert sampled_fps(indices, 4, nominal_fps=10) == 4.0


def test_realtime_end_time_float_error_and_edge_windows():
    assert realtime_frame_indices(10, end_time=2.3, fps=10, window=0) == [23]  # 2.3 * 10 = 22.999...
    assert realtime_frame_indices(25, end_time=0.0, fps=1, window=10) == [0]
    assert realtime_frame_indices(25, end_time=5.02, fps=1, start_time=5.01) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(native_fps=25, end_time=10, fps=0),
        dict(native_fps=25, end_time=10, fps=-1),
        dict(native_fps=0, end_time=10, fps=1),
        dict(native_fps=25, end_time=-1, fps=1),
        dict(native_fps=25, end_time=10, fps=1, window=-2),
        dict(native_fps=25, end_time=10, fps=1, max_frames=0),
        dict(native_fps=25, end_time=10, fps=1, start_time=11),
        dict(native_fps=25, end_time=float("nan"), fps=1),
    ],
)
def test_realtime_rejects_nonsense(kwargs):
    with pytest.raises(ConfigError):
        realtime_frame_indices(**kwargs)


# --- offline (Qwen) sampling ----------------------------------------------------------------


def test_offline_matches_qwen_rule():
    # 250 frames at 25 fps, 2 fps -> 20 frames spread by linspace over the whole video.
    expected = torch.linspace(0, 249, 20).round().long().tolist()
    assert offline_frame_indices(250, 25, fps=2) == expected
    assert offline_frame_indices(250, 25) == expected  # default fps is 2


def test_offline_frame_count_rules():
    assert len(offline_frame_indices(250, 25, fps=0.1)) == 4  # min_frames default 4
    assert len(offline_frame_indices(250, 25, fps=0.1, min_frames=6)) == 6
    assert len(offline_frame_indices(250, 25, fps=10, max_frames=7)) == 6  # floored to even
    assert len(offline_frame_indices(250, 25, nframes=8)) == 8
    assert len(offline_frame_indices(250, 25, nframes=7)) == 8  # rounded to even
    assert len(offline_frame_indices(3, 25, nframes=3)) == 2  # never more than the video has
    assert offline_frame_indices(250, 25, nframes=2) == [0, 249]


def test_offline_time_range():
    # 2 s .. 4 s is frames 50..100 (51 frames) -> 51 / 25 * 2 = 4.08 -> 4 frames.
    assert offline_frame_indices(250, 25, fps=2, start_time=2, end_time=4) == [50, 67, 83, 100]
    assert offline_frame_indices(250, 25, start_time=9.96) == [249]  # a single frame: pad later
    assert offline_frame_indices(250, 25, fps=2, end_time=1000)[-1] == 249


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fps=2, nframes=4),
        dict(fps=0),
        dict(nframes=0),
        dict(max_frames=0),
        dict(min_frames=8, max_frames=4),
        dict(start_time=-1),
        dict(start_time=5, end_time=4),
        dict(nframes=1000),
    ],
)
def test_offline_rejects_nonsense(kwargs):
    with pytest.raises(ConfigError):
        offline_frame_indices(250, 25, **kwargs)


def test_sampled_fps_is_true_spacing():
    assert sampled_fps([150, 175, 200, 225, 250], 25) == 1.0
    assert sampled_fps([0, 5, 10], 10) == 2.0
    # linspace over 60 frames at 10 fps, 12 frames: spacing 59/11 frames.
    assert sampled_fps(torch.linspace(0, 59, 12).round().long().tolist(), 10) == 11 * 10 / 59
    assert sampled_fps([7], 25, nominal_fps=2) == 2.0
    assert sampled_fps([7], 4, nominal_fps=10) == 4.0
