"""Load test of ``fluxmem serve``'s live streams: many streams, frames and questions at once.

Starts ``fluxmem serve`` on a tiny random Qwen2.5-VL (loopback only, float32, CPU) in a
subprocess, then:

1. load: ``--streams`` streams push frames in real time at ``--push-fps`` (in chunks of
   ``--chunk``) and ask a question every ``--ask-every`` seconds each, for ``--minutes``; prints
   p50/p95 time to first token (first streamed text), frames accepted per second, the prefix-cache
   hit rate (cached / prompt tokens, from vLLM) and the server's memory (RSS of its process tree)
   over time;
2. long stream: one stream fed as fast as the server ingests, its time simulated by timestamps, up
   to ``--long-minutes`` of stream time at 2 fps; the time to answer (whole answer, greedy) at
   minute 1 and at the end, asked ``--repeats`` times each (median), and their ratio. Every stream
   has ``--cap`` tokens of memory (``max_memory_tokens``), so the prompt stops growing once the cap
   binds.

    python benchmarks/stream_server_load.py                       # 16 streams, 3 minutes, 30-minute long stream
    python benchmarks/stream_server_load.py --minutes 1 --long-minutes 5   # quick

Needs the vLLM venv (``.ci/vllm.sh``); results printed, and with ``--out FILE.json`` written at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

QUESTION = "What is moving in the video?"


def build_model(path: Path) -> None:
    from fluxmem.testing import build_tiny_qwen2_5_vl

    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}
    model, processor = build_tiny_qwen2_5_vl(num_attention_heads=2, num_key_value_heads=2, rope_parameters=rope)
    model.config.vision_config.tokens_per_second = 1
    model.save_pretrained(path)
    processor.save_pretrained(path)


def start_server(model: Path, port: int, log: Path, args) -> subprocess.Popen:
    argv = [sys.executable, "-m", "fluxmem", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--short-frames", "4", "--medium-frames", "16", "--max-streams", str(args.streams + 1),
            "--max-stream-tokens", str(args.cap),
            "--vllm-args", f"--dtype float32 --enforce-eager --max-model-len {args.max_model_len} --max-num-seqs 16 "
            "--kv-cache-memory-bytes 536870912 --seed 0 --block-size 32"]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(2)
    process.kill()
    raise SystemExit(f"the server did not start; see {log}")


def server_rss(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def load_phase(url, pid, args, frames) -> dict:
    from fluxmem.serving import StreamClient

    ttft, accepted, errors, rss = [], [0], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.minutes * 60
    started = time.monotonic()

    def run(index: int) -> None:
        client = StreamClient(url, timeout=600)
        client.open(fps=2.0, max_memory_tokens=args.cap, memory_options={"direct_drop_sim": None})
        t_stream, next_ask, k = 0.0, args.ask_every, index * 7
        try:
            while time.monotonic() < stop_at:
                tick = time.monotonic()
                batch = [frames[(k + j) % len(frames)] for j in range(args.chunk)]
                stamps = [t_stream + j / args.push_fps for j in range(args.chunk)]
                k += args.chunk
                t_stream += args.chunk / args.push_fps
                out = client.push(batch, stamps)
                with lock:
                    accepted[0] += out["accepted"]
                if t_stream >= next_ask:
                    next_ask += args.ask_every
                    asked = time.monotonic()
                    first = []
                    client.ask(QUESTION, max_tokens=8, on_text=lambda _: first or first.append(time.monotonic()))
                    with lock:
                        ttft.append(((first[0] if first else time.monotonic()) - asked) * 1000)
                time.sleep(max(0.0, args.chunk / args.push_fps - (time.monotonic() - tick)))  # real-time pacing
        except Exception as error:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"stream {index}: {error}")
        try:
            stats = client.stats()
            with lock:
                prefix.append(stats["prefix_cache"])
            client.close()
        except Exception as error:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"stream {index} at the end: {error}")

    prefix: list[dict] = []
    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.streams)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        rss.append((round(time.monotonic() - started), server_rss(pid)))
        time.sleep(10)
    wall = time.monotonic() - started
    prompt = sum(p["prompt_tokens"] for p in prefix)
    cached = sum(p["cached_tokens"] for p in prefix)
    return {"streams": args.streams, "wall_s": round(wall, 1), "questions": len(ttft),
            "ttft_ms_p50": round(percentile(ttft, 0.5), 1), "ttft_ms_p95": round(percentile(ttft, 0.95), 1),
            "frames_accepted_per_s": round(accepted[0] / wall, 2), "frames_accepted": accepted[0],
            "prefix_hit_rate": round(cached / prompt, 4) if prompt else None, "prompt_tokens": prompt, "cached_tokens": cached,
            "server_rss_mib": [(t, round(b / 2**20)) for t, b in rss], "errors": errors}  # fmt: skip


def long_phase(url, args, frames) -> dict:
    from fluxmem.serving import StreamClient

    client = StreamClient(url, timeout=600)
    client.open(fps=2.0, max_memory_tokens=args.cap, memory_options={"direct_drop_sim": None})

    def answer_times() -> tuple[float, dict]:
        times, last = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            last = client.ask(QUESTION, max_tokens=8)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times), last

    marks, t, k, started = {}, 0.0, 0, time.monotonic()
    for minute in (1.0, args.long_minutes):
        while t < minute * 60:
            batch = [frames[(k + j) % len(frames)] for j in range(32)]
            client.push(batch, [t + j / 2.0 for j in range(32)])
            k += 32
            t += 16.0
        ms, last = answer_times()
        marks[minute] = {"answer_ms": round(ms, 1), "prompt_tokens": last["usage"]["prompt_tokens"],
                         "kept_tokens": last["memory"].get("kept"), "evicted_steps": last["memory"].get("evicted_frames")}  # fmt: skip
    client.close()
    first, end = marks[1.0], marks[args.long_minutes]
    return {"minutes": args.long_minutes, "ingest_wall_s": round(time.monotonic() - started, 1), "at_minute_1": first,
            f"at_minute_{args.long_minutes:g}": end, "ratio": round(end["answer_ms"] / first["answer_ms"], 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=3.0, help="real minutes of the load phase")
    parser.add_argument("--push-fps", type=float, default=2.0, help="frames per second each stream sends (1-2)")
    parser.add_argument("--chunk", type=int, default=2, help="frames per push")
    parser.add_argument("--ask-every", type=float, default=10.0, help="stream seconds between one stream's questions")
    parser.add_argument("--long-minutes", type=float, default=30.0, help="simulated minutes of the long stream")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap", type=int, default=512, help="max_memory_tokens per stream")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from fluxmem.testing import moving_square_frames

    frames = list(moving_square_frames(64, square=56))
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        build_model(Path(tmp) / "model")
        log = Path(tmp) / "server.log"
        process = start_server(Path(tmp) / "model", port, log, args)
        url = f"http://127.0.0.1:{port}"
        try:
            results = {"load": load_phase(url, process.pid, args, frames), "long": long_phase(url, args, frames),
                       "server_rss_mib_end": round(server_rss(process.pid) / 2**20)}  # fmt: skip
        finally:
            process.terminate()
            process.wait(60)
    load, long = results["load"], results["long"]
    print(f"load: {load['streams']} streams for {load['wall_s']} s, {load['questions']} questions; time to first token "
          f"p50 {load['ttft_ms_p50']} ms, p95 {load['ttft_ms_p95']} ms; frames accepted {load['frames_accepted_per_s']}/s; "
          f"prefix-cache hit rate {load['prefix_hit_rate']} ({load['cached_tokens']}/{load['prompt_tokens']} prompt tokens); "
          f"errors {len(load['errors'])}")
    print("server RSS (s, MiB): " + ", ".join(f"{t}:{m}" for t, m in load["server_rss_mib"]))
    end = long["at_minute_{:g}".format(long["minutes"])]
    print(f"long stream ({long['minutes']:g} simulated minutes, ingested in {long['ingest_wall_s']} s): answer at minute 1 "
          f"{long['at_minute_1']}, at the end {end}; ratio {long['ratio']}")
    if load["errors"]:
        print("errors:", *load["errors"][:5], sep="\n  ")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
