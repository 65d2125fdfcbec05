"""HTTP side of ``fluxmem serve``: the memory statistics next to vLLM's OpenAI-compatible API.

:class:`MemoryStatsMiddleware` (installed with vLLM's ``--middleware``) answers
``GET /fluxmem/memory?n=K`` with the statistics of the last ``K`` videos the server compressed
(newest last), ``GET /fluxmem/memory?uuid=U`` with those of the video a request sent with
``"uuid": U``, and passes every other request to vLLM untouched. The encoder and the memory run
in the API-server process, the same process as this middleware, so it reads them directly.
Entries follow processing order; under concurrent requests, find a reply's by the ``uuid`` its
video was sent with (what :func:`fluxmem.serving.client.ask` does).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from .common import recent_memory_stats

PATH = "/fluxmem/memory"


class MemoryStatsMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("path") != PATH or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            count = int(query.get("n", ["16"])[0])
        except ValueError:
            count = -1
        uuid = query.get("uuid", [None])[0]
        if count < 1:
            status, body = 400, {"error": "n must be a positive integer: GET /fluxmem/memory?n=2"}
        else:
            status, body = 200, {"videos": recent_memory_stats(count, uuid=uuid)}
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


# ------------------------------------------------------------------------------------ streams
STREAMS = "/v1/streams"
STREAM_FIELD = "fluxmem_stream"
"""The chat request's extra field naming the stream a question is about (``extra_body`` in openai)."""
LIMITS_ENV = "FLUXMEM_STREAM_LIMITS"
"""JSON of :class:`~fluxmem.serving.streams.StreamLimits` fields, set by ``fluxmem serve``."""


async def _reply(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body; ``None`` when the client disconnected before sending all of it."""
    from .streams import StreamError

    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise StreamError(413, f"the request body exceeds this server's limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class StreamsMiddleware:
    """Live video streams (``docs/serving.md``): ``POST /v1/streams`` opens one, ``POST
    /v1/streams/{id}/frames`` pushes frames, ``GET /v1/streams[/{id}]`` reports statistics,
    ``DELETE /v1/streams/{id}`` closes it, and ``POST /v1/chat/completions`` with
    ``"fluxmem_stream": id`` answers a question at the stream's current moment (SSE with
    ``"stream": true``). Every other request goes to vLLM untouched."""

    def __init__(self, app) -> None:
        import asyncio

        self.app = app
        self._registry = None
        self._registry_lock = asyncio.Lock()  # concurrent first requests build ONE registry

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") != "http" or not (path == STREAMS or path.startswith(STREAMS + "/") or path == "/v1/chat/completions"):
            await self.app(scope, receive, send)
            return
        from .streams import StreamError

        try:
            if path == "/v1/chat/completions":
                await self._maybe_question(scope, receive, send)
            else:
                self._authorize(scope)
                await self._route(scope, receive, send, path)
        except StreamError as error:
            await _reply(send, error.status, {"error": {"message": str(error), "code": error.status}})

    def _authorize(self, scope) -> None:
        from .streams import StreamError

        args = getattr(getattr(scope.get("app"), "state", None), "args", None)
        keys = getattr(args, "api_key", None)
        if not keys:
            return
        keys = [keys] if isinstance(keys, str) else list(keys)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode()
        if given.removeprefix("Bearer ") not in keys:
            raise StreamError(401, "this server needs an API key: send Authorization: Bearer KEY.")

    async def registry(self, scope):
        async with self._registry_lock:
            if self._registry is None:
                import asyncio
                import os

                from .streams import StreamLimits, registry_for

                limits = StreamLimits(**json.loads(os.environ.get(LIMITS_ENV) or "{}"))
                self._registry = await asyncio.to_thread(registry_for, scope["app"].state.vllm_config, limits)
        return self._registry

    async def _route(self, scope, receive, send, path):
        import asyncio

        from .streams import StreamError, decode_frame

        registry = await self.registry(scope)
        method = scope.get("method")
        parts = path[len(STREAMS):].strip("/").split("/") if path != STREAMS else []
        if not parts and method == "GET":
            return await _reply(send, 200, registry.stats())
        if not parts and method == "POST":
            body = await _read_body(receive, 1 << 20)
            if body is None:
                return
            stream = await asyncio.to_thread(registry.open, _json(body or b"{}"))
            session = stream.session
            return await _reply(send, 200, {"id": stream.id, "object": "stream", "fps": session.fps,
                                            "memory": session.method.spec, "max_memory_tokens": session.max_memory_tokens,
                                            "cap_policy": "prefill"})  # fmt: skip
        if len(parts) == 1 and method == "GET":
            return await _reply(send, 200, registry.get(parts[0]).stats())
        if len(parts) == 1 and method == "DELETE":
            return await _reply(send, 200, registry.close(parts[0]))
        if len(parts) == 2 and parts[1] == "frames" and method == "POST":
            stream = registry.get(parts[0])
            limits = registry.limits
            body = await _read_body(receive, limits.max_frames_per_push * limits.max_frame_bytes * 4 // 3 + (1 << 16))
            if body is None:  # fail closed: a client gone mid-push leaves no half-pushed stream behind
                registry.close(stream.id)
                return
            data = _json(body)
            frames = data.get("frames") if isinstance(data, dict) else None
            if not isinstance(frames, list) or not frames:
                raise StreamError(400, 'push frames as {"frames": [{"timestamp": seconds, "image": base64 JPEG/PNG}, ...]}.')
            if len(frames) > limits.max_frames_per_push:
                raise StreamError(413, f"{len(frames)} frames in one push exceed this server's limit of {limits.max_frames_per_push}.")
            decoded = await asyncio.to_thread(lambda: [decode_frame(item, limits) for item in frames])
            return await _reply(send, 200, await asyncio.to_thread(registry.push, stream, decoded))
        raise StreamError(404, f"no route {method} {path}; streams: POST {STREAMS}, POST {STREAMS}/ID/frames, GET or DELETE {STREAMS}/ID.")

    async def _maybe_question(self, scope, receive, send):
        body = await _read_body(receive, 1 << 20)
        if body is None:
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or STREAM_FIELD not in request:
            await self.app(scope, _replay(body), send)
            return
        self._authorize(scope)
        await self._answer(scope, receive, send, request)

    async def _answer(self, scope, receive, send, request):
        import asyncio
        import time
        import uuid

        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from .streams import StreamError

        registry = await self.registry(scope)
        stream = registry.get(request[STREAM_FIELD])
        messages = request.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages and isinstance(messages[-1], dict) else {}
        question = last.get("content")
        if isinstance(question, list):  # OpenAI content parts: the text parts
            question = "".join(p.get("text", "") for p in question if isinstance(p, dict) and p.get("type") == "text")
        if last.get("role") != "user" or not isinstance(question, str):
            raise StreamError(400, "a stream question is one user message with the question's text.")
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or 128
        options = {k: request[k] for k in ("temperature", "top_p", "top_k", "seed") if request.get(k) is not None}
        options.setdefault("temperature", 0.0)
        try:
            params = SamplingParams(max_tokens=int(max_tokens), output_kind=RequestOutputKind.DELTA, **options)
        except (TypeError, ValueError) as error:
            raise StreamError(400, f"bad sampling options: {error}") from None
        prompt = await asyncio.to_thread(registry.request, stream, question)
        engine = scope["app"].state.engine_client
        request_id = f"chatcmpl-{stream.id}-{uuid.uuid4().hex[:8]}"
        model = request.get("model") or registry.model
        created = int(time.time())
        streaming = bool(request.get("stream"))
        tokens, text, finish, prompt_tokens, cached = [], [], None, 0, 0

        def chunk(delta: dict, reason=None, extra=None) -> bytes:
            body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}  # fmt: skip
            if extra:
                body.update(extra)
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        started = False

        async def start() -> None:
            nonlocal started
            if streaming and not started:
                started = True
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})  # fmt: skip
                await send({"type": "http.response.body", "body": chunk({"role": "assistant", "content": ""}), "more_body": True})

        try:
            async for output in engine.generate(prompt, params, request_id):
                await start()
                completion = output.outputs[0]
                tokens += list(completion.token_ids)
                text.append(completion.text)
                finish = completion.finish_reason or finish
                prompt_tokens = len(output.prompt_token_ids or []) or prompt_tokens
                cached = output.num_cached_tokens if output.num_cached_tokens is not None else cached
                if streaming and completion.text:
                    await send({"type": "http.response.body", "body": chunk({"content": completion.text}), "more_body": True})
        except (asyncio.CancelledError, OSError):  # the client left: stop the request
            await engine.abort(request_id)
            raise
        except Exception as error:
            cause = error.__cause__ or error
            if started:
                await send({"type": "http.response.body", "body": b"data: " + json.dumps({"error": {"message": str(cause)}}).encode() + b"\n\n"})
                return
            raise StreamError(500, f"the engine could not answer: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}") from None
        await start()
        registry.record(stream, prompt_tokens, cached)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens), "total_tokens": prompt_tokens + len(tokens),
                 "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
        info = {STREAM_FIELD: {"id": stream.id, "time": stream.session.time, "token_ids": tokens,
                               "memory": stream.session.memory_stats().to_dict()}}  # fmt: skip
        if streaming:
            await send({"type": "http.response.body", "body": chunk({}, finish, {"usage": usage, **info}), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        await _reply(send, 200, {"id": request_id, "object": "chat.completion", "created": created, "model": model,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                                              "finish_reason": finish}],
                                 "usage": usage, **info})  # fmt: skip


def _json(body: bytes):
    from .streams import StreamError

    try:
        return json.loads(body)
    except ValueError:
        raise StreamError(400, "the request body is not valid JSON.") from None
