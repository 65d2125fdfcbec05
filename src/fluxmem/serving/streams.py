"""Live video streams held by ``fluxmem serve``: one memory per stream, in the API-server process.

A stream is an encode-only :class:`~fluxmem.session.StreamSession` on the processor-side vision
tower (:mod:`.encoder`): each pushed frame is sampled to the stream's fps, each complete grid step
is encoded once and the memory updated as frames arrive. A question becomes one engine request
whose video is the stream's kept tokens (precomputed embeddings, ``docs/serving.md``), every frame
at its original position, so that the answer equals ``StreamSession(cap_policy="prefill")``'s.

:class:`StreamRegistry` owns the streams and the limits (open streams, idle timeout, frame size,
frames per push); :class:`StreamError` carries the HTTP status and one line for the client. Ids
carry the id of the server run that opened them, so that after a restart a client is told its
stream is gone rather than finding another.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, FluxMemError

CAP_POLICY = "prefill"
"""vLLM 0.32 cannot drop tokens from a request's cached prefix in place: after the cap evicts, the
next question prefills the remaining prefix again (``StreamSession(cap_policy="prefill")``)."""


_ID = re.compile(r"stream-([0-9a-f]{8})-[0-9a-f]{12}")
"""A stream id: ``stream-RUN-STREAM``, RUN naming the server run that opened it."""


class StreamError(Exception):
    """A request the streams cannot serve: ``status`` (HTTP) and one line for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamLimits:
    max_streams: int = 16
    idle_timeout_s: float = 300.0
    max_frame_bytes: int = 8 << 20
    """Bytes of one frame as sent (encoded image, or raw pixels)."""
    max_frame_pixels: int = 1920 * 1080
    max_frames_per_push: int = 64
    max_memory_tokens: int | None = 8192
    """Cap per stream (a stream may ask for a lower one, never a higher one)."""


@dataclass
class ServerStream:
    id: str
    session: object  # StreamSession(encode_only=True)
    lock: threading.Lock
    opened: float
    last_used: float
    frames_received: int = 0
    frames_accepted: int = 0
    questions: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    closed: bool = False

    def stats(self) -> dict:
        session = self.session.stats()
        return {
            "id": self.id,
            "time": session["time"],
            "frames_received": self.frames_received,
            "frames_sampled": session["frames_sampled"],
            "frames_pending": session["frames_pending"],
            "grid_steps": session["grid_steps"],
            "memory": session["memory"],
            "max_memory_tokens": self.session.max_memory_tokens,
            "cap_policy": CAP_POLICY,
            "questions": self.questions,
            "prefix_cache": {
                "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens,
                "hit_rate": round(self.cached_tokens / self.prompt_tokens, 6) if self.prompt_tokens else None,
            },
            "timings_ms": session["timings_ms"],
        }


def decode_frame(item: dict, limits: StreamLimits) -> tuple[np.ndarray, float]:
    """``(H x W x 3 uint8, timestamp)`` of one pushed frame: ``{"timestamp", "image": base64 JPEG/PNG}``
    or ``{"timestamp", "array": base64 raw uint8 pixels, "shape": [H, W, 3]}``."""
    if not isinstance(item, dict) or "timestamp" not in item:
        raise StreamError(400, 'each frame is {"timestamp": seconds, "image": base64 JPEG/PNG} or {"timestamp", "array", "shape"}.')
    timestamp = item["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not np.isfinite(timestamp):
        raise StreamError(400, f"a frame's timestamp must be a finite number of seconds, got {timestamp!r}.")
    data = item.get("image", item.get("array"))
    if not isinstance(data, str):
        raise StreamError(400, 'a frame needs "image" (base64 JPEG/PNG) or "array" (base64 raw uint8 pixels with "shape").')
    if len(data) * 3 // 4 > limits.max_frame_bytes:
        raise StreamError(413, f"a frame of about {len(data) * 3 // 4} bytes exceeds this server's limit of {limits.max_frame_bytes} bytes.")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise StreamError(400, "a frame's data is not valid base64.") from None
    if "array" in item:
        shape = item.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and shape[2] == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise StreamError(400, f'a raw frame needs "shape": [height, width, 3], got {shape!r}.')
        if shape[0] * shape[1] > limits.max_frame_pixels:
            raise StreamError(413, f"a {shape[0]}x{shape[1]} frame exceeds this server's limit of {limits.max_frame_pixels} pixels.")
        if len(raw) != shape[0] * shape[1] * 3:
            raise StreamError(400, f"a raw {shape[0]}x{shape[1]}x3 frame needs {shape[0] * shape[1] * 3} bytes, got {len(raw)}.")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape), float(timestamp)
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > limits.max_frame_pixels:
            raise StreamError(413, f"a {image.height}x{image.width} frame exceeds this server's limit of {limits.max_frame_pixels} pixels.")
        return np.asarray(image.convert("RGB")), float(timestamp)
    except StreamError:
        raise
    except Exception:
        raise StreamError(400, "a frame's image is not a JPEG or PNG the server can decode.") from None


class StreamRegistry:
    """The open streams of one server run, their limits and their encoder."""

    def __init__(self, model: str, *, encoder, processor, memory_defaults: dict | None = None,
                 default_memory: str | None = None, limits: StreamLimits | None = None) -> None:  # fmt: skip
        self.model = model
        self.default_memory = default_memory
        """The server's memory method (``None``: FluxMem), for streams that name none."""
        self.encoder = encoder
        self.processor = processor
        self.memory_defaults = dict(memory_defaults or {})
        self.limits = limits or StreamLimits()
        self.run_id = uuid.uuid4().hex[:8]
        self._streams: dict[str, ServerStream] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle
    def open(self, options: dict) -> ServerStream:
        from ..session import StreamSession

        if not isinstance(options, dict):
            raise StreamError(400, "the body of POST /v1/streams is a JSON object of stream options.")
        known = {"memory", "memory_options", "fps", "system", "max_memory_tokens"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise StreamError(400, f"unknown stream option(s) {unknown}; known: {sorted(known)}.")
        self.sweep()
        with self._lock:
            if len(self._streams) >= self.limits.max_streams:
                raise StreamError(429, f"this server holds its limit of {self.limits.max_streams} open streams; close one first.")
        cap = options.get("max_memory_tokens", self.limits.max_memory_tokens)
        if self.limits.max_memory_tokens is not None and (cap is None or (isinstance(cap, int) and cap > self.limits.max_memory_tokens)):
            raise StreamError(400, f"max_memory_tokens may be at most this server's cap of {self.limits.max_memory_tokens}.")
        fps = options.get("fps", 1.0)
        temporal = self.encoder.temporal_patch_size
        if isinstance(fps, (int, float)) and self.encoder.config.model_type == "qwen2_5_vl" and fps != temporal:
            # vLLM 0.32 reads precomputed Qwen2.5-VL videos at one second per grid step (its time-scaled positions)
            raise StreamError(400, f"this model's served streams sample at fps={temporal} (one second per grid step); open the stream with fps={temporal}.")
        memory_options = {**self.memory_defaults, **(options.get("memory_options") or {})}
        memory = options.get("memory", self.default_memory)
        try:
            session = StreamSession(
                self.encoder.model, self.processor, fps=fps, system=options.get("system"), max_memory_tokens=cap,
                memory=memory, cap_policy=CAP_POLICY, encode_only=True,
                **(memory_options if memory is None or str(memory).startswith("fluxmem") else {}),
            )  # fmt: skip
        except FluxMemError as error:
            raise StreamError(400, str(error)) from None
        now = time.monotonic()
        stream = ServerStream(f"stream-{self.run_id}-{uuid.uuid4().hex[:12]}", session, threading.Lock(), now, now)
        with self._lock:
            if len(self._streams) >= self.limits.max_streams:
                raise StreamError(429, f"this server holds its limit of {self.limits.max_streams} open streams; close one first.")
            self._streams[stream.id] = stream
        return stream

    def get(self, stream_id) -> ServerStream:
        self.sweep()
        with self._lock:
            stream = self._streams.get(stream_id) if isinstance(stream_id, str) else None
        if stream is None:
            run = _ID.fullmatch(stream_id) if isinstance(stream_id, str) else None
            if run is not None and run.group(1) != self.run_id:
                raise StreamError(404, f"stream {stream_id} was opened before this server restarted; its memory is gone: open a new stream.")
            raise StreamError(404, f"no open stream {stream_id!r} (closed, timed out or never opened): open a new stream.")
        stream.last_used = time.monotonic()
        return stream

    def close(self, stream_id) -> dict:
        stream = self.get(stream_id)
        with self._lock:
            self._streams.pop(stream.id, None)
        stream.closed = True
        return {"id": stream.id, "closed": True}

    def sweep(self) -> None:
        """Close the streams idle for longer than the idle timeout."""
        deadline = time.monotonic() - self.limits.idle_timeout_s
        with self._lock:
            for key in [k for k, s in self._streams.items() if s.last_used < deadline and not s.lock.locked()]:
                self._streams.pop(key).closed = True

    def stats(self) -> dict:
        with self._lock:
            streams = list(self._streams.values())
        return {"run_id": self.run_id, "open_streams": len(streams), "limits": self.limits.__dict__,
                "streams": [s.stats() for s in streams]}  # fmt: skip

    # -------------------------------------------------------------- frames and questions
    def push(self, stream: ServerStream, frames: list) -> dict:
        """Add decoded frames ``[(pixels, timestamp)]`` in order (one push in flight per stream)."""
        if not stream.lock.acquire(blocking=False):
            raise StreamError(409, f"stream {stream.id} is already ingesting a push; send one chunk at a time.")
        try:
            if stream.closed:
                raise StreamError(404, f"no open stream {stream.id!r} (closed): open a new stream.")
            session = stream.session
            last = session.time
            times = [t for _, t in frames]
            if any(b <= a for a, b in zip(times, times[1:])) or (last is not None and times and times[0] <= last):
                raise StreamError(409, f"frame timestamps must strictly increase (the stream is at {last} s, this push has {times[:4]}...); nothing was added.")
            sampled = session.stats()["frames_sampled"]
            try:
                for pixels, timestamp in frames:
                    session.push(pixels, timestamp)
            except FluxMemError as error:
                raise StreamError(400, str(error)) from None
            stream.frames_received += len(frames)
            accepted = session.stats()["frames_sampled"] - sampled
            stream.frames_accepted += accepted
            stream.last_used = time.monotonic()
            return {"id": stream.id, "received": len(frames), "accepted": accepted, "dropped": len(frames) - accepted,
                    "time": session.time, "grid_steps": session.num_steps, "memory": session.memory_stats().to_dict()}  # fmt: skip
        finally:
            stream.lock.release()

    def request(self, stream: ServerStream, question: str) -> dict:
        """The engine prompt of ``question`` now: the chat text, the kept tokens as one video."""
        if not isinstance(question, str) or not question.strip():
            raise StreamError(400, "the question is empty; send the text to ask about the stream.")
        with stream.lock:
            session = stream.session
            prompt = {"prompt": session.prompt_text(question)}
            video = session.kept_video()
        if video is not None:
            timestamps = video.pop("timestamps")
            if self.encoder.config.model_type.startswith("qwen3"):
                video["timestamps"] = [timestamps]
            prompt["multi_modal_data"] = {"video": video}
        return prompt

    def record(self, stream: ServerStream, prompt_tokens: int, cached_tokens: int | None) -> None:
        stream.questions += 1
        stream.prompt_tokens += int(prompt_tokens)
        stream.cached_tokens += int(cached_tokens or 0)


def registry_for(vllm_config, limits: StreamLimits | None = None) -> StreamRegistry:
    """The registry of a running server: its model, the plugin's encoder and the FluxMem settings."""
    import torch
    from transformers import AutoProcessor

    from .encoder import get_encoder
    from .settings import ServingSettings

    model_config = vllm_config.model_config
    settings = ServingSettings.from_hf_config(model_config.hf_config)
    if settings is None:
        raise ConfigError("streams need FluxMem on: start the server with fluxmem serve (not vllm serve).")
    dtype = getattr(torch, settings.dtype) if settings.dtype else model_config.dtype
    encoder = get_encoder(model_config.model, device=settings.device, dtype=dtype, revision=getattr(model_config, "revision", None))
    processor = AutoProcessor.from_pretrained(model_config.model, revision=getattr(model_config, "revision", None))
    return StreamRegistry(model_config.model, encoder=encoder, processor=processor,
                          memory_defaults=settings.memory.to_dict(), default_memory=settings.method_spec, limits=limits)  # fmt: skip
