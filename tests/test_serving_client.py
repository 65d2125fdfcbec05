"""The serving client's statistics travel with its reply: the video goes with a fresh ``uuid``, the
server labels the statistics of the video it compresses with it, and the client fetches them by it,
whatever other requests the server processed meanwhile. Runs without vLLM (a stand-in server)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from fluxmem.serving import common
from fluxmem.serving.api import MemoryStatsMiddleware
from fluxmem.serving.client import ask


class _Server(BaseHTTPRequestHandler):
    """A stand-in for ``fluxmem serve``: each chat request compresses its video (recorded under the
    request's uuid), then ANOTHER request's video is compressed before the client asks for stats."""

    stats: dict  # the statistics recorded per uuid (set by the fixture)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        part = body["messages"][0]["content"][0]
        tokens = len(self.stats) + 10
        self.stats[part["uuid"]] = {"uuid": part["uuid"], "tokens": tokens, "kept": tokens // 2}
        self.stats["someone-else"] = {"uuid": "someone-else", "tokens": 999, "kept": 1}  # processed meanwhile
        self._reply({"choices": [{"message": {"content": f"answer {tokens}"}}], "usage": {"prompt_tokens": tokens}})

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        videos = [self.stats[query["uuid"][0]]] if "uuid" in query and query["uuid"][0] in self.stats else []
        if "uuid" not in query:  # the latest video, whoever sent it
            videos = [self.stats["someone-else"]]
        self._reply({"videos": videos})

    def _reply(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    _Server.stats = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_ask_returns_the_statistics_of_its_own_video(server, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded by the stand-in")
    first = ask(server, "m", str(video), "What?")
    second = ask(server, "m", str(video), "What?")
    assert first["answer"] == "answer 10" and second["answer"] == "answer 12"
    assert [entry["tokens"] for entry in first["memory"]] == [10]  # not 999: another request's video
    assert [entry["tokens"] for entry in second["memory"]] == [12]
    assert first["memory"][0]["uuid"] != second["memory"][0]["uuid"]  # a fresh uuid per request


def test_the_processor_labels_each_compressed_video_with_its_request_uuid():
    class StockProcessor:  # stands for vLLM's processor: compresses the request's videos in apply()
        def apply(self, inputs, timing):
            for uuid in common._request_uuids(2):
                common._record({"grid_thw": [2, 2, 2], "tokens": 2, "kept": 1}, torch.tensor([True, False]), uuid)

    class Processor(common.ProcessorMixin, StockProcessor):
        pass

    Processor().apply(SimpleNamespace(mm_uuid_items={"video": ["req-a", "req-b"]}), None)
    Processor().apply(SimpleNamespace(mm_uuid_items={"video": ["req-c"]}), None)  # 1 uuid, 2 videos: unlabelled
    assert [entry["uuid"] for entry in common.recent_memory_stats(uuid="req-b")] == ["req-b"]
    assert common.recent_memory_stats(uuid="req-c") == []
    assert "uuid" not in common.recent_memory_stats(1)[0]
    assert common._request_uuids(1) == [None]  # nothing left over for the next request on this thread


def test_the_memory_route_answers_by_uuid():
    common._record({"grid_thw": [1, 2, 2], "tokens": 1, "kept": 1}, torch.tensor([True]), "route-u")
    common._record({"grid_thw": [1, 2, 2], "tokens": 7, "kept": 7}, torch.tensor([True]), "route-v")
    sent = []

    async def send(message):
        sent.append(message)

    middleware = MemoryStatsMiddleware(app=None)
    scope = {"type": "http", "path": "/fluxmem/memory", "method": "GET", "query_string": b"uuid=route-u"}
    asyncio.run(middleware(scope, None, send))
    assert sent[0]["status"] == 200
    assert [entry["tokens"] for entry in json.loads(sent[1]["body"])["videos"]] == [1]
