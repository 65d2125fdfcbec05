"""Live-engine frame sources: files, HTTP streams, in-memory clips; pacing and clean endings."""

import functools
import http.server
import logging
import socket
import threading
import time

import av
import numpy as np
import pytest
from PIL import Image

from fluxmem.errors import InputError, VideoError
from fluxmem.video import open_source
from fluxmem.video.synthetic import read_synthetic_index, synthetic_frame, write_synthetic_clip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_synthetic_clip(root / "clip.mp4", 12, 10)
    with av.open(str(root / "long.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
        for i in range(100):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(synthetic_frame(i), format="rgb24")))
        container.mux(stream.encode(None))
    data = (root / "long.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(data[: len(data) // 2])  # header intact, data cut in half
    return root


def test_file_source_yields_rgb_frames_and_timestamps(root):
    with open_source(root / "clip.mp4") as source:
        assert source.fps == 10.0 and not source.is_live
        items = list(source)
    assert len(items) == 12
    for i, (frame, timestamp) in enumerate(items):
        assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3)
        assert read_synthetic_index(frame) == i
        assert timestamp == pytest.approx(i / 10)  # pts * time_base (1/10 is not exact in binary)


def test_close_stops_iteration(root):
    source = open_source(str(root / "clip.mp4"))
    next(source)
    source.close()
    source.close()  # idempotent
    with pytest.raises(StopIteration):
        next(source)


def test_realtime_paces_at_true_speed(root):
    start = time.monotonic()
    with open_source(root / "clip.mp4", realtime=True) as source:
        timestamps = [t for _, t in source]
    elapsed = time.monotonic() - start
    assert timestamps[-1] == 1.1
    assert elapsed >= 1.05  # frame 11 is due 1.1 s after frame 0


def test_in_memory_sources():
    array = np.stack([synthetic_frame(i) for i in range(4)])
    assert [(read_synthetic_index(f), t) for f, t in open_source(array, fps=4)] == [
        (0, 0.0),
        (1, 0.25),
        (2, 0.5),
        (3, 0.75),
    ]
    images = [Image.fromarray(synthetic_frame(i)) for i in range(3)]
    start = time.monotonic()
    frames = list(open_source(images, fps=20, realtime=True))
    assert time.monotonic() - start >= 0.09
    assert [read_synthetic_index(f) for f, _ in frames] == [0, 1, 2]


def test_in_memory_pixels_follow_the_one_rule():
    """uint8 0..255 or floats 0..1 (as push and answer read them); anything else is refused."""
    array = np.stack([synthetic_frame(i) for i in range(2)])
    for same in (array.astype(np.float32) / 255, array.astype(np.int64), [frame.astype(np.float64) / 255 for frame in array]):
        assert all(np.array_equal(got, want) for (got, _), want in zip(open_source(same, fps=2), array))
    for bad, message in ((array.astype(np.float32), "frame 0 of an in-memory video holds float pixels"),
                         (array.astype(np.uint16) * 257, "frame 0 of an in-memory video holds uint16 pixels")):  # fmt: skip
        with pytest.raises(InputError, match=message):
            list(open_source(bad, fps=2))


def test_failure_mid_stream_ends_cleanly(root, caplog):
    with caplog.at_level(logging.WARNING), open_source(root / "broken.mp4") as source:
        frames = [read_synthetic_index(f) for f, _ in source]  # must not raise
    assert 0 < len(frames) < 100
    assert frames == list(range(len(frames)))
    assert any("broken.mp4" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.fixture(scope="module")
def http_url(root):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_network_source(http_url):
    with open_source(f"{http_url}/clip.mp4") as source:
        assert not source.is_live and source.fps == 10.0  # an http(s) video is treated like a file
        items = [(read_synthetic_index(f), t) for f, t in source]
    assert items == [(i, pytest.approx(i / 10)) for i in range(12)]  # pts * time_base, as above


def test_unreachable_url_is_a_video_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VideoError, match=f"127.0.0.1:{port}"):
        open_source(f"http://127.0.0.1:{port}/clip.mp4")


def test_process_vision_info_reads_http_videos(http_url):
    from fluxmem.video import fetch_video

    clip = fetch_video({"video": f"{http_url}/clip.mp4", "anchor_end": True, "fps": 5, "max_pixels": 4 * 28 * 28})
    assert clip.indices == list(range(1, 12, 2))  # 0.2 s spacing ending at the last frame (11)
    assert [read_synthetic_index(f) for f in clip.frames] == clip.indices
