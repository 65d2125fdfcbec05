"""Evaluation protocols: named, recorded sets of settings, and the published frame rule.

A protocol fixes everything that decides what the model is shown and how its reply is read:
prompts, window, frames and their reported spacing, pixel limits, generation, past-the-end
handling, clips. Three are defined for StreamingBench and OVO-Bench (docs/evaluation.md has the
table of every difference and its reason):

* ``published`` - the published FluxMem evaluation, query by query (``shared/spec/
  published-protocol.md``): its prompt strings, its frame rule (whole-second count rounded down to
  even, end-anchored native steps, the reported ``sample_fps``), its pixel limits and generation,
  its StreamingBench reply chain as a score column, its past-the-end rule, OVO clips read from
  ``<videos>/chunked_videos/``. Its errors are kept on purpose.
* ``official`` - each benchmark's own code: its prompts, its window (StreamingBench 60 s, the
  leaderboard's; OVO-Bench all of ``[0, ceil(realtime)]``) and its scoring.
* ``fluxmem`` (the default) - FluxMem's settings (256 s window at 1 fps, at most 256 frames,
  12544..401408 pixels, 128 new tokens) with the published errors corrected: every frame of the
  window at exactly ``1/fps`` ending at the question (the oldest kept), the true spacing reported,
  questions past the end clamped and counted, the benchmark's own prompts.

The functions for the published rule (:func:`published_frames`, :func:`published_max_pixels`,
:func:`moviepy_duration`, :func:`published_time_stamp`, :func:`published_letter`) are pure; the
dry run (:mod:`fluxmem.eval.dryrun`) and the runner both use them. :func:`read_video_meta` reads
the little they need from a file (PyAV, no decoding).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError

PROTOCOLS = ("published", "official", "fluxmem")
DEFAULT_PROTOCOL = "fluxmem"

#: 16·28·28 and 512·28·28: the published pixel limits (our protocol keeps them).
MIN_PIXELS = 12544
MAX_PIXELS = 401408
_VIDEO_MAX_PIXELS = 602112  # 768·28·28, qwen-vl-utils' per-frame cap for videos
_TOTAL_PIXELS = 90316800  # int(128000·28·28·0.9), qwen-vl-utils' total budget
TEMPORAL_PATCH = 2
TOKENS_PER_SECOND = 2

#: What FluxMem's runs use on both streaming benchmarks, in every protocol: 1 fps, at most 256
#: frames, the published pixel limits, 128 new tokens and the checkpoint's repetition penalty.
STREAMING_SETTINGS = {"fps": 1.0, "max_frames": 256, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
                      "max_new_tokens": 128, "repetition_penalty": 1.05}


# --------------------------------------------------------------------------------------------
# Protocol settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """The resolved settings of one protocol for one benchmark (all recorded in ``run.json``).

    ``prompts``: which prompt strings (``"published"`` or ``"official"``). ``frames``:
    ``"published"`` (§5-7 of the published protocol) or ``"end_anchored"`` (frames at exactly
    ``1/fps`` ending at the question, the true spacing reported). ``context``: seconds of video
    before the question (``None``: all of it). ``min_frames``: the published reader's floor (2
    StreamingBench, 4 OVO-Bench); unused by end-anchored sampling. ``past_end``: ``"published"``
    (window ``[t - context, duration]``, dropped when empty), ``"clamp"`` or ``"skip"``.
    ``clips``: ``"chunked"`` (OVO-Bench: pre-cut ``chunked_videos/{id}.mp4``) or ``"source"``.
    ``scoring``: the score columns reported, the first one headline. ``repetition_penalty`` is
    the checkpoint's own ``generation_config`` value (1.05 for Qwen2.5-VL), passed explicitly.
    """

    name: str
    benchmark: str
    prompts: str
    frames: str
    context: float | None
    fps: float = 1.0
    max_frames: int = 256
    min_frames: int | None = None
    min_pixels: int | None = MIN_PIXELS
    max_pixels: int | None = MAX_PIXELS
    max_new_tokens: int = 128
    repetition_penalty: float = 1.05
    do_sample: bool = False
    past_end: str = "clamp"
    clips: str = "source"
    scoring: tuple[str, ...] = ("official", "robust")
    overrides: tuple[str, ...] = field(default=())

    def record(self) -> dict[str, Any]:
        """Every setting as plain JSON."""
        d = asdict(self)
        d["scoring"] = list(self.scoring)
        d["overrides"] = list(self.overrides)
        return d

    def generation(self) -> dict[str, Any]:
        """Keyword arguments for ``generate`` (besides ``max_new_tokens``)."""
        return {"do_sample": self.do_sample, "repetition_penalty": self.repetition_penalty}


#: Settings a user may change on the command line, per protocol (``published`` fixes them all).
OVERRIDABLE = ("context", "fps", "max_frames", "min_pixels", "max_pixels", "max_new_tokens", "past_end",
               "repetition_penalty")


def resolve_protocol(name: str, benchmark: str, **overrides: Any) -> Protocol:
    """The protocol ``name`` for ``benchmark`` with ``overrides`` (keys of :data:`OVERRIDABLE`,
    ``None`` meaning "not given") applied. ``published`` accepts no change: its settings may be
    restated (commands that spell out every setting), a different value is an error, since it would
    no longer be the published protocol."""
    from .benchmark import get_benchmark

    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}.")
    base = get_benchmark(benchmark).protocol(name)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(OVERRIDABLE))
    if unknown:
        raise ConfigError(f"protocol setting(s) {', '.join(unknown)} cannot be changed.")
    if "context" in given:
        ctx = given["context"]
        if not isinstance(ctx, (int, float)) or not math.isfinite(ctx) or ctx < 0:
            raise ConfigError(f"--context must be seconds >= 0 (0 = all of the past), got {ctx}.")
        given["context"] = float(ctx) if ctx > 0 else None
    if "past_end" in given and given["past_end"] not in ("clamp", "skip"):
        raise ConfigError(f"--past-end must be 'clamp' or 'skip', got {given['past_end']!r}.")
    for key in ("max_frames", "min_pixels", "max_pixels", "max_new_tokens"):
        if key in given and given[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {given[key]}.")
    if "fps" in given and not given["fps"] > 0:
        raise ConfigError(f"--fps must be > 0, got {given['fps']}.")
    if "repetition_penalty" in given and not given["repetition_penalty"] > 0:
        raise ConfigError(f"--repetition-penalty must be > 0, got {given['repetition_penalty']}.")
    lo = given.get("min_pixels", base.min_pixels)
    hi = given.get("max_pixels", base.max_pixels)
    if lo and hi and lo > hi:
        raise ConfigError(f"--min-pixels ({lo}) must not exceed --max-pixels ({hi}).")
    changed = tuple(sorted(k for k, v in given.items() if getattr(base, k) != v))
    if changed and name == "published":
        flags = ", ".join(f"--{k.replace('_', '-')} {given[k]}" for k in changed)
        raise ConfigError(
            f"--protocol published fixes every setting; drop {flags} (it may only restate the published "
            "values), or use --protocol fluxmem/official to change them."
        )
    return replace(base, **given, overrides=changed)


# --------------------------------------------------------------------------------------------
# Video metadata (what the published reader looks at)
# --------------------------------------------------------------------------------------------


class VideoMeta(NamedTuple):
    """``frames``: the stream's frame count (header, else packets); ``fps``: the declared average
    rate; ``container_us``: the container duration in microseconds (``None`` if unknown)."""

    frames: int
    fps: float
    container_us: int | None
    width: int = 0
    height: int = 0

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def read_video_meta(path: str | Path) -> VideoMeta:
    """Frame count, declared rate and container duration of a video file, without decoding.

    Raises :class:`~fluxmem.errors.VideoError` for a file that is not a readable video."""
    from ..errors import VideoError
    from ..video.decode import _count_packets, _reason, open_container, video_stream

    container, src = open_container(path)
    try:
        stream = video_stream(container, src)
        rate = stream.average_rate
        if rate is None or not float(rate) > 0:
            raise VideoError(f"{src} declares no average frame rate; re-encode it with a constant rate.")
        frames = int(stream.frames or 0)
        if frames <= 0:
            try:
                frames = _count_packets(container, stream)
            except Exception as exc:  # PyAV raises its own error types
                raise VideoError(f"{src} is corrupt: reading it failed ({_reason(exc)}).") from exc
        if frames <= 0:
            raise VideoError(f"{src} has a video stream but no frames.")
        dur = container.duration
        return VideoMeta(frames, float(Fraction(rate.numerator, rate.denominator)),
                         int(dur) if dur is not None and dur > 0 else None,
                         int(stream.codec_context.width or 0), int(stream.codec_context.height or 0))
    finally:
        container.close()


def moviepy_duration(container_us: int) -> float:
    """The duration moviepy 1.0.3 reads from ffmpeg's banner: ``container_us + 5000`` printed as
    ``HH:MM:SS.cc`` (hundredths cut), parsed back as ``((0 + SS.cc) + 60·MM) + 3600·HH``."""
    d = int(container_us) + 5000
    secs, us = divmod(d, 1_000_000)
    mins, secs = divmod(secs, 60)
    hours, mins = divmod(mins, 60)
    printed = f"{hours:02d}:{mins:02d}:{secs:02d}.{(100 * us) // 1_000_000:02d}"
    hh, mm, ss = printed.split(":")
    return ((0 + 1 * float(ss)) + 60 * float(mm)) + 3600 * float(hh)


# --------------------------------------------------------------------------------------------
# The published frame rule (§5-8)
# --------------------------------------------------------------------------------------------


class FramePlan(NamedTuple):
    """Which native frames a query sees. ``indices`` ascending, duplicates kept; ``times`` =
    ``index / fps``; ``sample_fps`` is the rate reported to the processor
    (``second_per_grid_ts = [2 / sample_fps]``); ``window`` = ``[start, end]`` seconds; ``issue``
    is ``None``, or why the query cannot run (then ``indices`` is empty)."""

    indices: list[int]
    times: list[float]
    sample_fps: float | None
    window: tuple[float, float]
    issue: str | None = None

    @property
    def second_per_grid_ts(self) -> list[float] | None:
        return None if not self.sample_fps else [TEMPORAL_PATCH / self.sample_fps]


def published_frames(frames: int, fps: float, video_start: float, video_end: float | None,
                     *, min_frames: int, max_frames: int = 256, sample_rate: float = 1.0) -> FramePlan:
    """The published reader's frames of ``[video_start, video_end]`` (``None``: to the last frame)
    of a video of ``frames`` native frames declared at ``fps`` (float64 throughout, as §5-7).

    ``start = ceil(max(0, min(video_start, N/F))·F)``, ``end = min(floor(max(0, min(video_end,
    N/F))·F), N-1)`` (or ``N-1``); ``W = end - start + 1``; ``x = min(max(W/F·rate, min_frames),
    max_frames, W)``, ``n = floor(x/2)·2``; frame k (k = 0 … n-1) back from the end is
    ``end - round(float32(k)·float32(F/rate))`` (half to even), clamped to ``[start, end]``;
    ascending. ``sample_fps = n / W · F``.
    """
    n_frames, f = int(frames), float(fps)
    dur = n_frames / f
    start_frame = math.ceil(max(0.0, min(float(video_start), dur)) * f)
    if video_end is None:
        end_frame = n_frames - 1
        window_end = dur
    else:
        end_frame = min(math.floor(max(0.0, min(float(video_end), dur)) * f), n_frames - 1)
        window_end = min(float(video_end), dur)
    window = (max(0.0, float(video_start)), window_end)
    if start_frame > end_frame:
        return FramePlan([], [], None, window,
                         f"window [{window[0]:g}, {window[1]:g}] s holds no frame of the video "
                         f"({dur:g} s): dropped by the published reader")
    width = end_frame - start_frame + 1
    x = width / f * sample_rate
    x = min(max(x, min_frames), max_frames, width)
    n = math.floor(x / 2) * 2
    if n < 2:
        return FramePlan([], [], None, window,
                         f"window [{window[0]:g}, {window[1]:g}] s holds {width} native frame(s), fewer "
                         "than 2: dropped by the published reader")
    step = np.float32(max(f / sample_rate, 1.0))
    offsets = np.round(np.arange(n, dtype=np.float32) * step).astype(np.int64)
    idx = np.clip(end_frame - offsets, start_frame, end_frame)[::-1]
    indices = [int(i) for i in idx]
    sample_fps = n / max(width, 1e-6) * f
    return FramePlan(indices, [i / f for i in indices], sample_fps, window)


def temporal_positions(n_frames: int, second_per_grid_t: float) -> list[int]:
    """Temporal rope positions of the video grids: ``int(float32(k)·float32(s)·2)``."""
    k = np.arange(n_frames // TEMPORAL_PATCH, dtype=np.float32)
    return [int(v) for v in k * np.float32(second_per_grid_t) * np.float32(TOKENS_PER_SECOND)]


def published_max_pixels(nframes: int, max_pixels: int = MAX_PIXELS, min_pixels: int = MIN_PIXELS) -> int:
    """``min(max_pixels, max(min(602112, 90316800 / n · 2), int(min_pixels · 1.05)))``."""
    budget = max(min(_VIDEO_MAX_PIXELS, _TOTAL_PIXELS / max(nframes, 1) * 2), int(min_pixels * 1.05))
    return int(min(max_pixels, budget))


def end_anchored_frames(frames: int, fps: float, start: float, end: float, *, rate: float,
                        max_frames: int | None) -> FramePlan:
    """Our protocol's frames (what :func:`fluxmem.video.realtime_frame_indices` picks, the odd
    count padded by repeating the newest), with the true spacing reported."""
    from ..video import realtime_frame_indices, sampled_fps
    from ..video.sampling import pad_to_multiple

    dur = frames / fps
    end = min(float(end), dur)
    window = (float(start), end)
    if float(start) >= dur:
        return FramePlan([], [], None, window, f"window starts at {start:g} s, after the end of the video ({dur:g} s)")
    if end - float(start) <= 1e-9:  # a zero-length window sees the one frame shown at its end
        idx = realtime_frame_indices(fps, end_time=end, fps=rate, max_frames=1, total_frames=frames)
    else:
        idx = realtime_frame_indices(fps, end_time=end, fps=rate, start_time=float(start),
                                     max_frames=max_frames, total_frames=frames)
    if not idx:
        return FramePlan([], [], None, window, f"window [{start:g}, {end:g}] s holds no frame")
    rate_true = sampled_fps(idx, fps, nominal_fps=rate)
    idx = idx + [idx[-1]] * pad_to_multiple(len(idx))
    return FramePlan(idx, [i / fps for i in idx], rate_true, window)


# --------------------------------------------------------------------------------------------
# Published StreamingBench specifics (§3, §9)
# --------------------------------------------------------------------------------------------


def published_time_stamp(value: Any) -> int | None:
    """The published reader's question time: ``"M:S"`` → ``60·M + S``, ``"H:M:S"`` →
    ``3600·H + 60·M + S``, each field through ``int()``; ``None`` where it raises."""
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        return None
    if len(nums) == 2:
        return 60 * nums[0] + nums[1]
    if len(nums) == 3:
        return 3600 * nums[0] + 60 * nums[1] + nums[2]
    return None


_PUBLISHED_CHAIN = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"option\s*([A-D])", r"([A-D])\s*is\s*the\s*best", r"answer\s*is\s*([A-D])", r"([A-D])\s*\)",
    r"^([A-D])$", r"option is\s*([A-D])", r"\(([A-D])\)",
))


def published_letter(reply: Any) -> str:
    """The published StreamingBench reply chain (§9): seven case-insensitive patterns in order,
    else the first upper-case ``A``-``D`` anywhere, else ``""``. Kept with its errors:
    ``"A. The woman (in red)"`` reads D, ``"Answer: C"`` reads A."""
    if not isinstance(reply, str):
        return ""
    s = reply.strip()
    for pattern in _PUBLISHED_CHAIN:
        m = pattern.search(s)
        if m:
            return m.group(1).upper()
    m = re.search(r"[A-D]", s)
    return m.group(0) if m else ""


def describe(protocol: Protocol) -> str:
    """One line naming the protocol and its main settings (for score tables)."""
    ctx = "all" if protocol.context is None else f"{protocol.context:g} s"
    return (f"protocol {protocol.name}: prompts {protocol.prompts}, frames {protocol.frames}, window {ctx}, "
            f"{protocol.fps:g} fps, <= {protocol.max_frames} frames, pixels {protocol.min_pixels}..{protocol.max_pixels}, "
            f"max_new_tokens {protocol.max_new_tokens}, repetition_penalty {protocol.repetition_penalty:g}, "
            f"past end {protocol.past_end}, clips {protocol.clips}")


def protocol_from_record(record: Mapping[str, Any] | None) -> Protocol | None:
    """The :class:`Protocol` recorded in a ``run.json`` (``None`` for runs that predate it)."""
    if not record:
        return None
    d = dict(record)
    d["scoring"] = tuple(d.get("scoring") or ())
    d["overrides"] = tuple(d.get("overrides") or ())
    return Protocol(**d)


def frames_summary(times: Sequence[float]) -> str:
    if not times:
        return "no frame"
    return f"{len(times)} frames {times[0]:.3f} … {times[-1]:.3f} s"
