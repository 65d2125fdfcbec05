"""Live streams on ``fluxmem serve``: a served stream answers exactly as ``StreamSession``.

One server per family (a tiny random model, float32, eager mode, loopback only), started with
``fluxmem serve`` in a subprocess. Two streams are pushed interleaved; at each question the served
greedy tokens equal those of a ``StreamSession(cap_policy="prefill")`` fed the same frames in
this process (vLLM 0.32 cannot cut evicted tokens out of a cached prefix, so the server prefills
the remaining prefix again, as that session does), before and after the cap evicts. Then the
faults: an unknown stream, frames out of time order, an oversized frame, a client gone mid-push,
a wrong API key, and a restart (old ids are told their stream is gone).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from fluxmem.testing import moving_square_frames

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("FLUXMEM_REQUIRE_VLLM") == "1":
    raise ImportError("vLLM is not importable in the venv that .ci/vllm.sh built")
pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed here; `bash .ci/vllm.sh` runs these tests")

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
# Qwen3-VL writes a timestamp before every grid step; vLLM writes it for a step the cap evicted (no
# tokens left) where the session writes nothing, so its served answers are compared until the cap
# first evicts.
EXACT_AFTER_EVICTION = ("qwen2_5_vl",)
MEMORY = {"short_frames": 4, "medium_frames": 8}
# The tiny random towers give nearly parallel features for all frames: without the direct drop the
# memory keeps different, partial sets per frame (as in test_vllm_plugin.py).
STREAM_MEMORY = {**MEMORY, "direct_drop_sim": None}
# The cap per family: Qwen2.5-VL's binds within the stream (answers compared after evictions);
# Qwen3-VL's holds every frame of it (answers compared with long-term frames, before any eviction).
CAP = {"qwen2_5_vl": 96, "qwen3_vl": 256}
FPS = 2.0
KEY = "test-key"
MAX_TOKENS = 6
QUESTION = "What is moving in the video?"
# A system prompt long enough that the prompt head fills a 32-token block of vLLM's prefix cache.
SYSTEM = ("You are watching a live video stream from a fixed camera. Answer questions about what happened so far, "
          "briefly and precisely, naming the objects, their colours and how they move.")


# vLLM's CPU kernels and transformers differ by up to ~1e-2 in log-probability on these tiny random
# models (tests/test_vllm_plugin.py), whose next-token distributions are nearly flat: where the
# session's two best tokens are closer than this, the greedy choice is decided by rounding, not by
# the prompt, so tokens are compared up to the first such step (and at least one per answer).
MARGIN = 2e-2


def decided_tokens(session, question: str, tokens: list[int]) -> int:
    """How many leading greedy ``tokens`` the session picks by more than :data:`MARGIN` in
    log-probability over the runner-up (a full prefill of the kept tokens, then teacher forcing)."""
    import torch

    with torch.inference_mode():
        cache, block, position = session._prefill_block(question, False)
        logits = session.ops.forward_block(block, cache)
        for k, token in enumerate(tokens):
            best = torch.topk(logits.float().log_softmax(-1), 2)
            if int(best.indices[0]) != token or float(best.values[0] - best.values[1]) <= MARGIN:
                return k
            logits = session.ops.forward(session.ops.embed([token]), session.ops.text_positions(position + k, 1), cache)
    return len(tokens)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, port: int, log_path):
    argv = [sys.executable, "-m", "fluxmem", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
            *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in MEMORY.items()), []),
            "--max-stream-tokens", "256", "--max-streams", "3", "--max-frame-bytes", "100000", "--api-key", KEY,
            "--vllm-args", "--dtype float32 --enforce-eager --max-model-len 4096 --max-num-seqs 4 "
            "--kv-cache-memory-bytes 268435456 --seed 0 --block-size 32"]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    log = open(log_path, "w")  # noqa: SIM115 - closed with the server
    # a session of its own: stopping the server stops vLLM's engine processes with it
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited:\n{open(log_path).read()[-6000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(2)
    stop_server(process)
    raise AssertionError(f"the server did not start:\n{open(log_path).read()[-6000:]}")


def stop_server(process) -> None:
    """The server and every process it started (vLLM's engine core and workers)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module", params=FAMILIES)
def server(request, tmp_path_factory):
    from test_vllm_plugin import build

    family = request.param
    root = tmp_path_factory.mktemp(f"streams-{family}")
    model, processor = build(family, root / "model")
    process, url = start_server(root / "model", _free_port(), root / "server.log")
    state = {"family": family, "model": model, "processor": processor, "url": url, "process": process, "root": root}
    yield state
    stop_server(state["process"])  # the one running now (a restart test replaces it)


def client(url):
    from fluxmem.serving import StreamClient

    return StreamClient(url, api_key=KEY, timeout=300)


def test_served_streams_answer_as_the_session_two_streams_interleaved(server):
    from fluxmem.session import StreamSession

    videos = [moving_square_frames(48, square=56), moving_square_frames(48, square=56, seed=1)]
    sessions = [StreamSession(server["model"], server["processor"], fps=FPS, max_memory_tokens=CAP[server["family"]], cap_policy="prefill",
                              system=SYSTEM, **STREAM_MEMORY) for _ in videos]  # fmt: skip
    clients = [client(server["url"]) for _ in videos]
    for c in clients:
        c.open(fps=FPS, memory_options={"direct_drop_sim": None}, max_memory_tokens=CAP[server["family"]], system=SYSTEM)
    compared, evicted, with_long, tokens_compared = 0, 0, 0, 0
    for start in range(0, 48, 4):
        for c, session, frames in zip(clients, sessions, videos):
            chunk = list(range(start, start + 4))
            pushed = c.push([frames[i] for i in chunk], [i / FPS for i in chunk])
            for i in chunk:
                session.push(frames[i], i / FPS)
            assert pushed["accepted"] == 4 and pushed["time"] == session.time
            assert pushed["memory"]["kept"] == session.memory_stats().kept
        if start % 8 != 4:
            continue
        for c, session in zip(clients, sessions):
            memory = session.stats()["memory"]
            if memory["evicted_frames"] and server["family"] not in EXACT_AFTER_EVICTION:
                continue
            served = c.ask(QUESTION, max_tokens=MAX_TOKENS)
            local = session.ask(QUESTION, max_new_tokens=MAX_TOKENS)
            decided = max(1, decided_tokens(session, QUESTION, local.token_ids))
            assert served["token_ids"][:decided] == local.token_ids[:decided], (start, memory, decided, served, local.token_ids)
            tokens_compared += decided
            assert served["usage"]["prompt_tokens"] == local.prompt_tokens
            evicted = max(evicted, memory["evicted_frames"])
            with_long += memory["tiers"]["long"]["frames"] > 0
            compared += 1
    assert compared >= 4 and with_long >= 2, (compared, with_long)  # answers compared with long-term frames held
    assert tokens_compared >= 2 * compared, tokens_compared
    if server["family"] in EXACT_AFTER_EVICTION:
        assert evicted >= 2, evicted  # ... and after the cap evicted
    stats = clients[0].stats()
    assert stats["questions"] >= 2 and stats["cap_policy"] == "prefill"
    # the prompt head (system prompt) came from vLLM's prefix cache at the 2nd and 3rd questions
    assert stats["prefix_cache"]["cached_tokens"] >= (stats["questions"] - 1) * 32, stats["prefix_cache"]
    # the official openai client: the stream id in extra_body, the answer as server-sent events
    import openai

    api = openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY)
    pieces = api.chat.completions.create(model="", messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS,
                                         temperature=0.0, stream=True, extra_body={"fluxmem_stream": clients[0].stream_id})  # fmt: skip
    text = "".join(chunk.choices[0].delta.content or "" for chunk in pieces if chunk.choices)
    assert text == clients[0].ask(QUESTION, max_tokens=MAX_TOKENS)["answer"] and text
    for c in clients:
        c.close()


def test_serve_command_line_carries_the_streams(capsys):
    from fluxmem.cli import main

    assert main(["serve", "/models/qwen", "--api-key", "k", "--dry-run"]) == 0
    line = capsys.readouterr().out
    assert "--middleware fluxmem.serving.api.StreamsMiddleware --enable-mm-embeds" in line and "--api-key k" in line
    assert main(["serve", "/models/qwen", "--max-streams", "0", "--dry-run"]) == 2
    assert "--max-streams must be positive, got 0" in capsys.readouterr().err


def _error(call):
    from fluxmem.serving.client import StreamServerError

    with pytest.raises(StreamServerError) as caught:
        call()
    assert "\n" not in str(caught.value)
    return caught.value


def test_faults(server):
    from fluxmem.serving import StreamClient

    url, frames = server["url"], moving_square_frames(8, square=56)
    c = client(url)
    for left in c._call("GET", "/v1/streams")["streams"]:  # streams an earlier failure left open
        c._call("DELETE", f"/v1/streams/{left['id']}")
    assert _error(lambda: StreamClient(url, timeout=60).open(fps=FPS)).status == 401  # no API key
    stream_id = c.open(fps=FPS)
    # unknown and closed streams: 404 and one line
    ghost = client(url)
    ghost.stream_id = "stream-nope"
    error = _error(lambda: ghost.ask(QUESTION))
    assert error.status == 404 and "no open stream 'stream-nope'" in str(error)
    # frames out of time order: refused, nothing added
    c.push([frames[0], frames[1]], [0.0, 0.5])
    error = _error(lambda: c.push([frames[2], frames[3]], [1.0, 0.75]))
    assert error.status == 409 and "strictly increase" in str(error)
    error = _error(lambda: c.push(frames[2], 0.5))
    assert error.status == 409
    assert c.stats()["frames_received"] == 2
    # an oversized frame (the server takes at most 100000 bytes a frame)
    big = np.zeros((200, 200, 3), dtype=np.uint8)
    error = _error(lambda: c.push(big, 5.0))
    assert error.status == 413 and "100000 bytes" in str(error)
    assert c.stats()["frames_received"] == 2
    # a client gone mid-push frees its stream (fail closed)
    body = json.dumps({"frames": [{"timestamp": 9.0, "array": base64.b64encode(frames[4].tobytes()).decode(),
                                   "shape": list(frames[4].shape)}]}).encode()  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(f"POST /v1/streams/{stream_id}/frames HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:100])  # fmt: skip
        time.sleep(0.5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            c.stats()
        except Exception as gone:  # noqa: BLE001 - the assertion below names it
            assert getattr(gone, "status", None) == 404, gone
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the stream survived its client's disconnect mid-push")
    # the cap on open streams (3 on this server)
    opened = [client(url) for _ in range(3)]
    for o in opened:
        o.open(fps=FPS)
    assert _error(lambda: client(url).open(fps=FPS)).status == 429
    closed_id = opened[0].stream_id
    for o in opened:
        o.close()
    opened[0].stream_id = closed_id  # a question on a closed stream
    error = _error(lambda: opened[0].ask(QUESTION))
    assert error.status == 404 and closed_id in str(error)


def test_restart_tells_clients_their_streams_are_gone(server):
    if server["family"] != FAMILIES[0]:
        pytest.skip("one restart is enough (the same code path for every family)")
    c = client(server["url"])
    c.open(fps=FPS)
    c.push(moving_square_frames(4, square=56)[0], 0.0)
    stop_server(server["process"])
    port = int(server["url"].rsplit(":", 1)[1])
    server["process"], url = start_server(server["root"] / "model", port, server["root"] / "server-restarted.log")
    # the first requests after a start arrive together: they share one registry (one server run)
    import threading

    fresh = [client(url) for _ in range(3)]
    threads = [threading.Thread(target=f.open, kwargs={"fps": FPS}) for f in fresh]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({f.stream_id.split("-")[1] for f in fresh}) == 1
    for f in fresh:
        assert f.stats()["frames_received"] == 0
        f.close()
    error = _error(lambda: c.ask(QUESTION))
    assert error.status == 404 and "before this server restarted" in str(error)
    assert _error(lambda: c.push(moving_square_frames(4, square=56)[1], 0.5)).status == 404
