"""Streaming latency: the session versus re-processing the whole history at every question.

One run, one machine, one Qwen2.5-VL-shaped random model (bigger than the test model, still
CPU-sized), synthetic 112x112 frames at 1 fps:

1. time to answer at stream time t = 1, 5, 15, 30 minutes: ``StreamSession.ask`` versus the
   re-process-everything approach (make the frames up to t, run the processor, encode every grid
   step, run FluxMem over all of them and prefill the whole pruned prompt: ``model.generate`` with
   ``use_fluxmem=True``), printed as a table with the ratio (and whether the answers agree), plus
   the session with ``max_memory_tokens`` (flat by construction);
2. per-grid-step ingest cost of the session, split into preprocessing, vision encoding, memory
   update and cache extension;
3. memory over a 1-hour stream with and without ``max_memory_tokens`` (each in a fresh
   process): peak RSS growth over the loaded model, and what the session holds
   (``stats()["resident_bytes"]``: the memory's features + key/value cache + per-token extras) at
   its peak, at 30 minutes and at the end; with the cap the last two are equal-sized (no growth).

    python benchmarks/stream_latency.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/stream_latency.py --quick    # smoke run (t = 10, 30, 60 s; 5-minute stream)
    python benchmarks/stream_latency.py --part memory   # only the 1-hour stream

Results are printed and, with ``--out FILE.json``, written after every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import fluxmem  # noqa: E402
from fluxmem.inference import encode_videos  # noqa: E402
from fluxmem.session import StreamSession  # noqa: E402
from fluxmem.testing import build_processor, build_tokenizer, moving_square_frames, tiny_qwen2_5_vl_config  # noqa: E402

QUESTION = "What is moving in the video?"
TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]})
VISION = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4)


def build_model(seed: int = 0):
    """A random Qwen2.5-VL with the real structure at benchmark size (4 text layers of width 256,
    4 vision blocks of width 64), float32 on the CPU, FluxMem switch installed."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = tiny_qwen2_5_vl_config(tokenizer, **TEXT)
    for key, value in VISION.items():
        setattr(config.vision_config, key, value)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    fluxmem.enable(model)  # paper defaults: short_frames=8, medium_frames=64
    return model, processor


def frames_until(seconds: int, size: int):
    return moving_square_frames(int(seconds), height=size, width=size)


def reprocess_answer(model, processor, session: StreamSession, frames, max_new_tokens: int):
    """The published approach: everything from the raw frames, for one question."""
    started = time.perf_counter()
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    text = session.ops.render(session._messages(QUESTION, [], with_video=True))
    inputs = session.ops.offline_inputs(text, video, session.fps)
    encoded = encode_videos(model, inputs)
    model_inputs = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    with torch.inference_mode():
        out = model.generate(**model_inputs, mm_encoder_outputs=encoded, use_fluxmem=True,
                             max_new_tokens=max_new_tokens, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    return (time.perf_counter() - started) * 1000, tokens


def latency_table(args, results, save) -> None:
    model, processor = build_model()
    size = args.frame_size
    moments = args.moments
    session = StreamSession(model, processor, fps=1.0)
    capped = StreamSession(model, processor, fps=1.0, max_memory_tokens=args.cap)
    all_frames = frames_until(max(moments), size)
    pushed = 0
    rows = []
    print(f"\n== answer latency, median of {args.repeats} (1 fps, {size}x{size} frames, {session.config.short_frames}/{session.config.medium_frames} "
          f"short/medium frames, {args.max_new_tokens} new tokens) ==")
    print(f"{'t':>8} {'steps':>6} {'kept':>6} {'session ms':>11} {'(prefill':>9} {'decode)':>8} {'capped ms':>10} "
          f"{'reprocess ms':>13} {'ratio':>7}  same answer")
    for moment in moments:
        ingest_started = time.perf_counter()
        while pushed < moment:
            session.push(all_frames[pushed], float(pushed))
            capped.push(all_frames[pushed], float(pushed))
            pushed += 1
        ingest_s = time.perf_counter() - ingest_started
        # median of `repeats` timings each (the machine is shared: single timings are noisy)
        answers = [session.ask(QUESTION, max_new_tokens=args.max_new_tokens) for _ in range(args.repeats)]
        answer = sorted(answers, key=lambda a: a.latency_ms)[len(answers) // 2]
        capped_ms = sorted(capped.ask(QUESTION, max_new_tokens=args.max_new_tokens).latency_ms for _ in range(args.repeats))[args.repeats // 2]
        redone = [reprocess_answer(model, processor, session, all_frames[:moment], args.max_new_tokens)
                  for _ in range(args.repeats)]
        reprocess_ms, tokens = sorted(redone)[len(redone) // 2]
        row = {
            "t_s": moment,
            "steps": session.num_steps,
            "kept_tokens": answer.memory["kept"],
            "session_ms": round(answer.latency_ms, 1),
            "session_prefilled_tokens": answer.prefilled_tokens,
            "session_prefill_ms": answer.timings_ms["prefill"],
            "session_decode_ms": answer.timings_ms["decode"],
            "capped_session_ms": round(capped_ms, 1),
            "reprocess_ms": round(reprocess_ms, 1),
            "ratio": round(reprocess_ms / answer.latency_ms, 1),
            "same_answer": tokens == answer.token_ids,
            "ingest_s_since_previous": round(ingest_s, 2),
        }
        rows.append(row)
        results["latency"] = rows
        save()
        label = f"{moment // 60} min" if moment % 60 == 0 else f"{moment} s"
        print(f"{label:>8} {row['steps']:>6} {row['kept_tokens']:>6} {row['session_ms']:>11.1f} {row['session_prefill_ms']:>9.1f} "
              f"{row['session_decode_ms']:>8.1f} {row['capped_session_ms']:>10.1f} {row['reprocess_ms']:>13.1f} "
              f"{row['ratio']:>6.1f}x  {'yes' if row['same_answer'] else 'NO'}")
    first, last = rows[0]["session_ms"], rows[-1]["session_ms"]
    print(f"session time at the last moment / first moment: {last / first:.2f}x uncapped, "
          f"{rows[-1]['capped_session_ms'] / rows[0]['capped_session_ms']:.2f}x with max_memory_tokens={args.cap} "
          "(capped answers are not compared: a cap forgets on purpose)")

    stats = session.stats()
    steps = max(1, stats["grid_steps"])
    per_step = {k: round(stats["timings_ms"][k] / steps, 3) for k in ("preprocess", "encode", "memory", "cache")}
    results["ingest_ms_per_grid_step"] = per_step
    save()
    print(f"\n== ingest cost per grid step (2 frames), mean over {steps} steps ==")
    for key, value in per_step.items():
        print(f"  {key:<11} {value:8.2f} ms")
    print(f"  {'total':<11} {sum(per_step.values()):8.2f} ms  ({sum(per_step.values()) / 2:.2f} ms per sampled frame)")


def _current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(seconds: int, cap: int | None, size: int) -> dict:
    """Run in a fresh process: stream ``seconds`` frames, report peak RSS growth and held bytes."""
    model, processor = build_model()
    session = StreamSession(model, processor, fps=1.0, max_memory_tokens=cap)
    frames = frames_until(min(seconds, 8), size)  # the stream repeats 8 distinct frames
    base_rss = peak_rss = _current_rss()
    peak_held, peak_cache_tokens, held_half, started = 0, 0, 0, time.perf_counter()
    for second in range(seconds):
        session.push(frames[second % len(frames)], float(second))
        if second % 60 == 59:
            stats = session.stats()
            held = stats["resident_bytes"]["total"]
            peak_held = max(peak_held, held)
            if second < seconds // 2:
                held_half = held
            peak_cache_tokens = max(peak_cache_tokens, stats["cache"]["tokens"])
            peak_rss = max(peak_rss, _current_rss())
    held = session.stats()["resident_bytes"]  # at the end of the stream, before the question
    answer = session.ask(QUESTION, max_new_tokens=4)
    peak_rss = max(peak_rss, _current_rss())
    stats = session.stats()
    return {
        "cap": cap,
        "seconds": seconds,
        "rss_growth_mib": round((peak_rss - base_rss) / 2**20, 1),
        "peak_held_mib": round(peak_held / 2**20, 2),
        "held_at_half_mib": round(held_half / 2**20, 2),
        "held_at_end_mib": round(held["total"] / 2**20, 2),
        "held_at_end": {k: round(v / 2**20, 3) for k, v in held.items()},
        "cache_cuts": stats["cache"]["cuts"],  # times the cap cut the cache (one cut drops several frames)
        "peak_cache_tokens": peak_cache_tokens,
        "final_kept_tokens": stats["memory"]["kept"],
        "evicted_frames": stats["memory"]["evicted_frames"],
        "answer_ms_at_end": round(answer.latency_ms, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def peak_memory_table(args, results, save) -> None:
    minutes = args.stream_seconds // 60
    print(f"\n== memory over a {minutes}-minute stream (1 fps, {args.frame_size}x{args.frame_size}) ==")
    print(f"{'cap':>8} {'RSS growth MiB':>15} {'held peak':>10} {f'at {minutes // 2} min':>10} {f'at {minutes} min':>10} "
          f"{'cache tokens':>13} {'kept now':>9} {'evicted':>8} {'cuts':>5} {'answer ms':>10}")
    rows = []
    for cap in (None, args.cap):
        command = [sys.executable, __file__, "--_peak-child", str(args.stream_seconds), str(cap or 0), str(args.frame_size)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        results["peak_memory"] = rows
        save()
        print(f"{cap or 'none'!s:>8} {row['rss_growth_mib']:>15.1f} {row['peak_held_mib']:>10.2f} {row['held_at_half_mib']:>10.2f} "
              f"{row['held_at_end_mib']:>10.2f} {row['peak_cache_tokens']:>13} {row['final_kept_tokens']:>9} "
              f"{row['evicted_frames']:>8} {row['cache_cuts']:>5} {row['answer_ms_at_end']:>10.1f}")
    print("(held, MiB = stats()['resident_bytes']: the memory's features + key/value cache + per-token extras, sampled every "
          "minute; RSS growth = peak resident memory, sampled every minute, minus the resident memory after loading)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: t = 10, 30, 60 s and a 5-minute stream")
    parser.add_argument("--frame-size", type=int, default=112, help="square frame side in pixels (multiple of 28)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timings per moment and approach (median reported)")
    parser.add_argument("--cap", type=int, default=2048, help="max_memory_tokens for the capped stream")
    parser.add_argument("--out", default=None, help="write the results as JSON here (after every measurement)")
    parser.add_argument("--part", choices=("all", "latency", "memory"), default="all",
                        help="run the latency tables, the 1-hour stream's memory, or both")
    parser.add_argument("--_peak-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args._peak_child:
        seconds, cap, size = args._peak_child
        print(json.dumps(peak_memory_child(seconds, cap or None, size)))
        return 0
    args.moments = [10, 30, 60] if args.quick else [60, 300, 900, 1800]
    args.stream_seconds = 300 if args.quick else 3600
    results = {"settings": {"moments_s": args.moments, "frame_size": args.frame_size, "fps": 1.0, "text": TEXT,
                            "vision": VISION, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "cap": args.cap,
                            "stream_seconds": args.stream_seconds, "threads": torch.get_num_threads()}}

    def save():
        if args.out:
            with open(args.out, "w") as file:
                json.dump(results, file, indent=1)

    print(f"settings: {json.dumps(results['settings'])}")
    started = time.perf_counter()
    if args.part in ("all", "latency"):
        latency_table(args, results, save)
    if args.part in ("all", "memory"):
        peak_memory_table(args, results, save)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
