"""One browser tab's state: its own streaming session over the shared model, and what it shows.

Nothing here imports Gradio, so the behaviour of the page (what is ingested when, the messages on
bad input, the numbers shown) is plain Python that tests can call directly.

Answers cover the video UP TO THE FURTHEST PLAYBACK POSITION REACHED: frames are pushed to the
session as the player advances (and, at a question, up to the player's current time). The memory
cannot forget, so seeking back does not remove frames already ingested; "Start over" does.

Live mode (:meth:`TabSession.start_live`, :meth:`TabSession.push_live`): frames from a camera are
pushed as they arrive, stamped with the time since the camera started; a question is answered
from everything the camera has shown so far.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import FluxMemError, InputError, VideoError

TIER_NAMES = {"short": "short-term", "mid": "mid-term", "long": "long-term"}


@dataclass
class Reply:
    """One answer as the page shows it."""

    question: str
    text: str
    latency_ms: float
    covered_until: float
    kept: int
    tokens: int

    def markdown(self) -> str:
        text = self.text.strip() or "(the model answered with an empty string)"
        return (
            f"{text}\n\n*{self.latency_ms:.0f} ms | video up to {self.covered_until:.1f} s | "
            f"{self.kept}/{self.tokens} visual tokens in memory*"
        )


class TabSession:
    """A :class:`fluxmem.StreamSession` for one tab, fed from an uploaded or recorded video.

    ``lock`` is shared by every tab: it is held around each use of the model (one push or one
    question), so tabs take turns on the model and never see each other's state.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        config=None,
        fps: float = 1.0,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        lock: threading.Lock | None = None,
        overlay_steps: int = 6,
        max_new_tokens: int = 64,
    ) -> None:
        from ..adapters import registry
        from ..session import StreamSession

        self.lock = lock or threading.Lock()
        self.session = StreamSession(model, processor, config, fps=fps, min_pixels=min_pixels, max_pixels=max_pixels)
        adapter = registry.adapter_for(model)
        self.temporal_patch_size = adapter.temporal_patch_size
        self.cell_px = int(adapter.vision_config.patch_size) * adapter.spatial_merge_size
        self.overlay_steps = int(overlay_steps)
        self.max_new_tokens = int(max_new_tokens)
        self._own = threading.RLock()  # one handler at a time for this tab (timer ticks vs. questions)
        self.video: str | None = None
        self.duration = 0.0
        self.live = False
        self._live_origin: float | None = None
        self._live_size: tuple[int, int] | None = None
        self._source = None
        self._finished = False
        self._clear_display()

    # ------------------------------------------------------------------ video
    def _clear_display(self) -> None:
        self._sampled: list[tuple[np.ndarray, float]] = []  # sampled frames of the step being filled
        self._recent: deque[tuple[int, np.ndarray, list[float]]] = deque(maxlen=max(1, self.overlay_steps))
        self._ingested_until: float | None = None
        self._frames_seen = 0
        self._next: tuple[np.ndarray, float] | None = None  # decoded, not pushed yet (beyond the playback position)

    def open(self, path) -> str:
        """Start over on the video at ``path``; returns a status line. Raises :class:`VideoError`
        (not a video, no frames) with a message for the page; the previous state is kept then."""
        from ..video import open_source, probe_video

        if not path:
            raise VideoError("No video was received. Upload a video file (MP4, WebM, MOV, ...) or record one with the webcam.")
        info = probe_video(path)  # raises VideoError for a non-video or a video without frames
        with self._own:
            self.close()
            with self.lock:
                self.session.reset()
            self._clear_display()
            self._source = open_source(str(path))
            self._finished = False
            self.live = False
            self.video, self.duration = str(path), float(info.duration)
        return (
            f"Loaded a {info.duration:.1f} s video ({info.width}x{info.height}, {info.fps:.3g} fps). Press play: "
            f"frames enter the memory as the video plays; questions are answered from the video up to the playback position."
        )

    def close(self) -> None:
        """Release the decoder (the tab closed or a new video replaced this one)."""
        if self._source is not None:
            try:
                self._source.close()
            except Exception:  # pragma: no cover - closing a broken container
                pass
        self._source = None

    def restart(self) -> str:
        if self.video is None:
            raise InputError("No video yet: upload a video or record one with the webcam first.")
        if self.live:
            return self.start_live()
        return self.open(self.video)

    # ------------------------------------------------------------------- live
    def start_live(self) -> str:
        """Start over on a live camera: an empty memory, the clock at zero with the next frame."""
        with self._own:
            self.close()
            with self.lock:
                self.session.reset()
            self._clear_display()
            self._finished = True  # no file to read
            self.live, self.video, self.duration = True, "live camera", 0.0
            self._live_origin, self._live_size = None, None
        return "Live camera: frames enter the memory as they arrive; ask at any moment."

    def push_live(self, frame, now: float | None = None) -> bool:
        """Push one camera frame (H x W x 3 uint8), stamped ``now`` (monotonic seconds; default the
        current time) relative to the first frame. Frames whose size differs from the first are
        resized to it. Returns whether the memory gained a grid step."""
        if frame is None:
            return False
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            raise InputError(f"a camera frame must be H x W x 3 (RGB), got shape {frame.shape}.")
        frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        now = time.monotonic() if now is None else float(now)
        with self._own:
            if not self.live:
                self.start_live()
            if self._live_origin is None:
                self._live_origin, self._live_size = now, frame.shape[:2]
            elif frame.shape[:2] != self._live_size:
                height, width = self._live_size
                frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
            timestamp = now - self._live_origin
            if self._ingested_until is not None and timestamp <= self._ingested_until:
                return False  # a late or duplicate frame: the session needs increasing times
            steps = self.session.num_steps
            self._push(frame, timestamp)
            self.duration = timestamp
            return self.session.num_steps > steps

    # ----------------------------------------------------------------- ingest
    def ingest_until(self, position: float | None) -> int:
        """Push every frame with timestamp <= ``position`` seconds (all frames for ``None``) that is
        not in the session yet; returns how many frames were pushed."""
        if position is not None and (not math.isfinite(position) or position < 0):
            position = None
        pushed = 0
        with self._own:
            if self._source is None or self._finished:
                return 0
            while True:
                if self._next is None:
                    try:
                        self._next = next(self._source)
                    except StopIteration:
                        self._finished = True
                        break
                    except VideoError:
                        self._finished = True
                        if self._frames_seen == 0:
                            raise
                        break
                frame, timestamp = self._next
                if position is not None and timestamp > position + 1e-6:
                    break  # not played yet; kept for later
                self._next = None
                self._push(frame, timestamp)
                pushed += 1
        return pushed

    def _push(self, frame: np.ndarray, timestamp: float) -> None:
        session = self.session
        with self.lock:
            sampled_before, steps_before = session.stats()["frames_sampled"], session.num_steps
            session.push(frame, timestamp)
            sampled = session.stats()["frames_sampled"] > sampled_before
            steps_after = session.num_steps
        self._frames_seen += 1
        self._ingested_until = timestamp
        if sampled:
            self._sampled.append((frame, timestamp))
        if steps_after > steps_before:
            frames = self._sampled[-self.temporal_patch_size :]
            self._sampled = []
            grid_h, grid_w = session.memory.grid_hw
            size = (grid_w * self.cell_px, grid_h * self.cell_px)
            resized = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f, _ in frames])
            self._recent.append((steps_after - 1, resized, [t for _, t in frames]))

    # -------------------------------------------------------------------- ask
    def ask(self, question: str, position: float | None) -> Reply:
        """Ingest up to the playback ``position`` (everything when the player's time is unknown),
        then answer. Raises :class:`InputError` with a message for the page when there is nothing
        to answer from."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("The question is empty: type a question about the video first.")
        if self.video is None:
            raise InputError("No video yet: upload a video or record one with the webcam, press play, then ask.")
        with self._own:
            self.ingest_until(position)
            if self.session.num_steps == 0:
                seconds = self.temporal_patch_size / self.session.fps
                further = "Let the camera run a little longer" if self.live else "Play the video a little further"
                raise InputError(
                    f"No frame is in the memory yet: the model reads frames in pairs ({seconds:g} s of video at "
                    f"{self.session.fps:g} fps). {further}, then ask again."
                )
            started = time.perf_counter()
            with self.lock:
                answer = self.session.ask(question.strip(), max_new_tokens=self.max_new_tokens)
            latency = (time.perf_counter() - started) * 1000
            memory = answer.memory
            return Reply(question.strip(), answer.text, latency, float(answer.time or 0.0), memory["kept"], memory["tokens"])

    # ------------------------------------------------------------------ views
    def stats(self) -> dict:
        with self.lock:
            return self.session.stats()

    def stats_markdown(self) -> str:
        """Tokens per tier, retained fraction and what has been ingested, as a small table."""
        if self.video is None:
            return "**Memory:** empty. Upload a video or record one with the webcam."
        stats = self.stats()
        memory = stats["memory"]
        if self._ingested_until is None:
            until = "nothing yet"
        elif self.live:
            until = f"0 - {self._ingested_until:.1f} s of the live camera"
        else:
            until = f"0 - {self._ingested_until:.1f} s of {self.duration:.1f} s"
        lines = [
            f"**Memory** covers {until}: {stats['grid_steps']} grid steps from {stats['frames_sampled']} sampled "
            f"frames ({stats['frames_seen']} decoded).",
            "",
            "| tier | grid steps | visual tokens kept / seen |",
            "|---|---:|---:|",
        ]
        for tier in ("short", "mid", "long"):
            entry = memory["tiers"][tier]
            lines.append(f"| {TIER_NAMES[tier]} | {entry['frames']} | {entry['kept']} / {entry['tokens']} |")
        lines.append(
            f"| **all** | {memory['steps']} | {memory['kept']} / {memory['tokens']} "
            f"({100 * memory['retained_fraction']:.1f}% retained) |"
        )
        cache = stats["cache"]
        timings = stats["timings_ms"]
        lines += [
            "",
            f"Reused key/value cache: {cache['tokens']} tokens. Ingest time so far: encode {timings['encode']:.0f} ms, "
            f"memory {timings['memory']:.0f} ms, cache {timings['cache']:.0f} ms.",
        ]
        return "\n".join(lines)

    def overlay(self) -> Image.Image | None:
        """The latest grid steps drawn with the memory's current decisions (newest last)."""
        from ..viz import contact_sheet, trace_from_records

        if not self._recent:
            return None
        with self.lock:
            records = self.session.memory.frames
            config = self.session.config
        steps = [(index, frames, times) for index, frames, times in self._recent if index < len(records)]
        trace = trace_from_records(
            [records[index] for index, _, _ in steps],
            np.concatenate([frames for _, frames, _ in steps]),
            self.session.memory.grid_hw,
            config=config,
            temporal_patch_size=self.temporal_patch_size,
            timestamps=[t for _, _, times in steps for t in times],
        )
        first, last = steps[0][0], steps[-1][0]
        title = f"latest grid steps {first}-{last} (newest last) as the memory holds them now"
        return contact_sheet(trace, columns=min(3, len(steps)), tile_width=240, title=title)


def message(error: BaseException) -> str:
    """The one-line text the page shows for an error raised on purpose."""
    if isinstance(error, FluxMemError):
        return str(error)
    return f"Unexpected error ({type(error).__name__}): {error}"
