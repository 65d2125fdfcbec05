"""Bad videos and nonsense parameters give one clear fluxmem error naming the file - never a raw
PyAV/torch exception."""

import av
import pytest
from PIL import Image

from fluxmem.errors import ConfigError, VideoError
from fluxmem.video import decode_frames, fetch_video, open_source, probe_video, process_vision_info
from fluxmem.video.synthetic import synthetic_frame, write_synthetic_clip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    made = {"good": write_synthetic_clip(root / "good.mp4", 20, 4)}
    made["zero"] = write_synthetic_clip(root / "zero.avi", 0, 4, codec="rawvideo")
    Image.fromarray(synthetic_frame(3)).save(root / "picture.png")
    Image.fromarray(synthetic_frame(3)).save(root / "photo.jpg")
    made["png"], made["jpg"] = str(root / "picture.png"), str(root / "photo.jpg")
    (root / "notes.txt").write_text("not a video\n" * 50)
    (root / "notes.mp4").write_text("not a video either\n" * 50)
    (root / "empty.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    made["txt"], made["txt_mp4"] = str(root / "notes.txt"), str(root / "notes.mp4")
    made["empty"], made["noise"] = str(root / "empty.mp4"), str(root / "noise.mp4")
    # moov atom at the end (PyAV's default): half the file has no index, hence no stream.
    data = (root / "good.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    made["cut"] = str(root / "cut.mp4")
    # moov atom first: the header promises 100 frames but the data stops early.
    with av.open(str(root / "faststart.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
        for i in range(100):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(synthetic_frame(i), format="rgb24")))
        container.mux(stream.encode(None))
    data = (root / "faststart.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    made["truncated"] = str(root / "truncated.mp4")
    made["missing"] = str(root / "does_not_exist.mp4")
    return made


def _video_message(**item):
    return [{"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "video", **item}]}]


@pytest.mark.parametrize(
    "key, words",
    [
        ("missing", "not found"),
        ("png", "not a video"),
        ("jpg", "not a video"),
        ("txt", "not a video"),
        ("txt_mp4", "Cannot open"),
        ("empty", "empty file"),
        ("noise", "Cannot open"),
        ("cut", "no video stream"),
        ("zero", "no frames"),
    ],
)
def test_bad_files_raise_video_error_naming_the_file(files, key, words):
    path = files[key]
    for call in (
        lambda: probe_video(path),
        lambda: decode_frames(path),
        lambda: process_vision_info(_video_message(video=path)),
        lambda: list(open_source(path)),
    ):
        with pytest.raises(VideoError) as info:
            call()
        assert path in str(info.value) and words in str(info.value)


def test_truncated_data_is_reported_not_padded(files):
    path = files["truncated"]
    with pytest.raises(VideoError, match="truncated or corrupt") as info:
        decode_frames(path)
    assert path in str(info.value)
    with pytest.raises(VideoError, match="truncated or corrupt"):
        process_vision_info(_video_message(video=path, nframes=10))


def test_video_start_beyond_end(files):
    with pytest.raises(VideoError, match="beyond the end") as info:
        process_vision_info(_video_message(video=files["good"], video_start=6.0))
    assert files["good"] in str(info.value)
    with pytest.raises(VideoError, match="beyond the end"):
        decode_frames(files["good"], start_time=30.0)


@pytest.mark.parametrize(
    "options",
    [
        {"fps": 0},
        {"fps": -2},
        {"max_frames": 0},
        {"nframes": 0},
        {"min_frames": 8, "max_frames": 4},
        {"min_pixels": 100_000, "max_pixels": 50_000},
        {"video_start": -1.0},
        {"video_end": -1.0},
        {"video_start": 3.0, "video_end": 1.0},
        {"fps": 2, "nframes": 4},
        {"anchor_end": True, "nframes": 4},
        {"anchor_end": True, "window": -5},
        {"fps": "fast"},
    ],
)
def test_nonsense_parameters_raise_config_error(files, options):
    with pytest.raises(ConfigError):
        fetch_video({"video": files["good"], **options})


def test_in_memory_source_needs_fps():
    with pytest.raises(ConfigError, match="fps"):
        open_source([Image.new("RGB", (8, 8))])
    with pytest.raises(ConfigError):
        open_source([Image.new("RGB", (8, 8))], fps=0)


def test_missing_camera_is_a_video_error():
    with pytest.raises(VideoError, match="/dev/video97"):
        open_source(97)
