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
