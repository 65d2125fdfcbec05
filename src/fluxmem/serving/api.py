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
