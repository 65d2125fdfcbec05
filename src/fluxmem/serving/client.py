"""A minimal client for ``fluxmem serve``: one question about one video, answer + memory statistics.

Only the standard library: it speaks vLLM's OpenAI-compatible chat API. A video is a file path
(sent as a ``file://`` URL: start the server with ``--allowed-local-media-path`` covering it) or
an http(s) URL, decoded and sampled by the server.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from ..errors import InputError


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def video_url(video: str) -> str:
    if video.startswith(("http://", "https://", "file://", "data:")):
        return video
    path = Path(video).resolve()
    if not path.is_file():
        raise InputError(f"video {video!r} does not exist; pass a file path or an http(s) URL.")
    return path.as_uri()


def ask(base_url: str, model: str, video: str, question: str, *, max_tokens: int = 128, fps: float | None = None,
        timeout: float = 600.0) -> dict:  # fmt: skip
    """``{"answer", "usage", "memory"}`` for ``question`` about ``video`` from a ``fluxmem serve``
    server at ``base_url`` (e.g. ``http://localhost:8000``). ``memory`` holds the statistics the
    server recorded for THIS request's video (tokens, kept, tiers): the video goes with a fresh
    ``uuid`` and its statistics are fetched by it, whatever other requests ran meanwhile (the
    fresh uuid also means the server encodes the video again rather than reusing a cached one)."""
    base_url = base_url.rstrip("/")
    tag = f"fluxmem-{uuid.uuid4().hex}"
    body = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video_url(video)}, "uuid": tag},
                    {"type": "text", "text": question},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    if fps is not None:
        body["media_io_kwargs"] = {"video": {"fps": fps}}
    response = _post(f"{base_url}/v1/chat/completions", body, timeout)
    with urllib.request.urlopen(f"{base_url}/fluxmem/memory?uuid={tag}", timeout=timeout) as stats:
        memory = json.loads(stats.read())["videos"]
    return {"answer": response["choices"][0]["message"]["content"], "usage": response.get("usage"), "memory": memory}


class StreamServerError(InputError):
    """A stream request the server refused: ``status`` (HTTP) and the server's one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StreamClient:
    """One live stream on a ``fluxmem serve`` server (standard library only).

    ``open`` creates the stream, ``push`` sends frames with their timestamps (numpy ``H x W x 3``
    uint8 arrays, sent raw, or JPEG/PNG ``bytes``), ``ask`` streams the answer at the stream's
    current moment (``on_text`` gets each piece of text as it arrives), ``stats`` and ``close``.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.stream_id: str | None = None

    # -------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, body: dict | None = None):
        import urllib.error

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"{method} {path} failed with HTTP {error.code}"
            raise StreamServerError(error.code, message) from None

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._request(method, path, body) as response:
            return json.loads(response.read())

    def _id(self) -> str:
        if self.stream_id is None:
            raise InputError("no stream is open: call open() first.")
        return self.stream_id

    # -------------------------------------------------------------- streams
    def open(self, *, fps: float = 1.0, memory: str | None = None, memory_options: dict | None = None,
             system: str | None = None, max_memory_tokens: int | None = None) -> str:  # fmt: skip
        body = {"fps": fps}
        for key, value in (("memory", memory), ("memory_options", memory_options), ("system", system),
                           ("max_memory_tokens", max_memory_tokens)):  # fmt: skip
            if value is not None:
                body[key] = value
        self.stream_id = self._call("POST", "/v1/streams", body)["id"]
        return self.stream_id

    def push(self, frames, timestamps) -> dict:
        """Send frames (one or a list) seen at ``timestamps`` (seconds, strictly increasing)."""
        import base64

        import numpy as np

        if isinstance(frames, np.ndarray) and frames.ndim == 4:  # T x H x W x 3
            frames = list(frames)
        if not isinstance(frames, (list, tuple)):
            frames, timestamps = [frames], [timestamps]
        items = []
        for frame, timestamp in zip(frames, timestamps, strict=True):
            if isinstance(frame, (bytes, bytearray)):
                items.append({"timestamp": float(timestamp), "image": base64.b64encode(frame).decode()})
                continue
            pixels = np.ascontiguousarray(np.asarray(frame), dtype=np.uint8)
            items.append({"timestamp": float(timestamp), "array": base64.b64encode(pixels.tobytes()).decode(),
                          "shape": list(pixels.shape)})  # fmt: skip
        return self._call("POST", f"/v1/streams/{self._id()}/frames", {"frames": items})

    def ask(self, question: str, *, max_tokens: int = 128, model: str = "", on_text=None, **sampling) -> dict:
        """``{"answer", "token_ids", "usage", "memory", "time"}``; greedy unless ``sampling`` says otherwise."""
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                "temperature": 0.0, "stream": True, "fluxmem_stream": self._id(), **sampling}  # fmt: skip
        text, last = [], {}
        with self._request("POST", "/v1/chat/completions", body) as response:
            for line in response:
                line = line.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[len(b"data: "):])
                if "error" in event:
                    raise StreamServerError(500, event["error"].get("message", "the server failed mid-answer"))
                piece = event["choices"][0]["delta"].get("content")
                if piece:
                    text.append(piece)
                    if on_text is not None:
                        on_text(piece)
                last = event
        info = last.get("fluxmem_stream", {})
        return {"answer": "".join(text), "token_ids": info.get("token_ids"), "usage": last.get("usage"),
                "memory": info.get("memory"), "time": info.get("time")}  # fmt: skip

    def stats(self) -> dict:
        return self._call("GET", f"/v1/streams/{self._id()}")

    def close(self) -> dict:
        out = self._call("DELETE", f"/v1/streams/{self._id()}")
        self.stream_id = None
        return out
