"""Everything that needs a GPU, in one call: one table, written to JSON.

Builds a random-weight model with the real Qwen2.5-VL-7B shapes (28 decoder layers, 3584 hidden,
18944 intermediate, 28/4 heads; 32-block vision tower of width 1280) directly on the GPU in
bfloat16 (no download: random weights cost the same time and memory), then measures:

1. prefill latency and peak memory, unpruned vs FluxMem, at 64 / 128 / 256 frames of 512 merged
   tokens per grid step (2 frames, 448x896 pixels). The video enters as encoder outputs
   (video-like features); the vision tower's own cost per grid step is measured once apart, as it
   is the same with and without FluxMem. Peak = ``torch.cuda.max_memory_allocated`` during the
   call (also shown above what was allocated before it);
2. the memory update per grid step (``FluxMemory.push``, goal <= 0.5 ms on an H100) and the
   batched offline ``compress`` per grid step, at 512 tokens x 3584 dims in bfloat16;
3. ``fluxmem.StreamSession`` answer latency at 1 / 5 / 15 / 30 minutes of a 1-fps stream of
   448x896 frames (goal: 30 min within 2x of 1 min).

Needs only torch, transformers, accelerate and fluxmem. Runs in about 5 minutes on an H100
(``--budget-s`` stops pushing the stream when the time is spent and says so).

    python benchmarks/gpu_suite.py --out gpu_suite.json
    python benchmarks/gpu_suite.py --smoke --out smoke.json    # tiny shapes on the CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_overhead import video_like_features
from prefill_memory import build_model, encoder_outputs, peak_bytes, video_prompt

QUESTION = "What is moving in the video?"
VISION_7B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, window_size=112,
                 fullatt_block_indexes=[7, 15, 23, 31])
FULL = dict(layers=28, text={}, vision=VISION_7B, frames=[64, 128, 256], grid=(16, 32), memory_steps=128,
            session_seconds=[60, 300, 900, 1800], session_grid=(16, 32), repeats=3)
SMOKE = dict(layers=2, text=dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                  "mrope_section": [4, 6, 6]}),
             vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, window_size=56,
                         fullatt_block_indexes=[1]),
             frames=[16, 32], grid=(2, 4), memory_steps=16, session_seconds=[4, 8], session_grid=(2, 2), repeats=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def expand_video(inputs: dict, steps: int, video_token_id: int) -> dict:
    """A one-grid-step video prompt stretched to ``steps`` grid steps (its video block repeated;
    every per-token tensor follows), so that no pixels need processing."""
    ids = inputs["input_ids"]
    where = (ids[0] == video_token_id).nonzero().squeeze(1)
    start, count = int(where[0]), int(where.numel())
    out = dict(inputs)
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == ids.shape[1]:
            block = value[:, start : start + 1].expand(-1, steps * count)
            out[key] = torch.cat([value[:, :start], block, value[:, start + count :]], dim=1)
    grid = inputs["video_grid_thw"].clone()
    grid[0, 0] = steps
    out["video_grid_thw"] = grid
    return out


def prefill_rows(model, processor, spec, device, log) -> list[dict]:
    grid = spec["grid"]
    dim = model.config.text_config.hidden_size
    one_step = video_prompt(processor, 1, grid)
    rows = []
    with torch.inference_mode():
        for frames in spec["frames"]:
            steps = frames // 2
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                      for k, v in expand_video(one_step, steps, model.config.video_token_id).items()}
            features = video_like_features(steps, grid[0], grid[1], dim, "cpu").to(device, model.dtype)
            row = {"frames": frames, "visual_tokens": int(features.shape[0]), "prompt_tokens": int(inputs["input_ids"].shape[1])}
            for mode in ("baseline", "fluxmem"):
                def call(inputs=inputs, features=features, mode=mode):
                    return model(**inputs, mm_encoder_outputs=encoder_outputs(features), use_fluxmem=mode == "fluxmem",
                                 logits_to_keep=1)
                call()  # warm-up (kernels, allocator)
                times = []
                for _ in range(spec["repeats"]):
                    sync(device)
                    started = time.perf_counter()
                    call()
                    sync(device)
                    times.append((time.perf_counter() - started) * 1000)
                before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
                peak, _, _ = peak_bytes(call, device)
                row[f"{mode}_ms"] = round(min(times), 1)
                row[f"{mode}_peak_bytes"] = int(peak + before)
                row[f"{mode}_peak_above_start_bytes"] = int(peak)
                if mode == "fluxmem":
                    from fluxmem import get_state

                    row["kept_tokens"] = get_state(model).summary()["kept"]
            row["latency_cut"] = round(1 - row["fluxmem_ms"] / row["baseline_ms"], 3)
            row["peak_cut"] = round(1 - row["fluxmem_peak_bytes"] / row["baseline_peak_bytes"], 3)
            rows.append(row)
            log(f"  prefill {frames:>4} frames: {row['visual_tokens']} visual tokens, {row['kept_tokens']} kept | "
                f"baseline {row['baseline_ms']:.1f} ms {row['baseline_peak_bytes'] / 2**30:.3f} GiB | FluxMem "
                f"{row['fluxmem_ms']:.1f} ms {row['fluxmem_peak_bytes'] / 2**30:.3f} GiB")
            del inputs, features
    return rows


def vision_row(model, spec, device) -> dict:
    """Vision tower time per grid step (2 frames), the same with and without FluxMem."""
    from fluxmem.inference import encode_videos

    vision = model.config.vision_config
    steps = 8
    patches_h, patches_w = 2 * spec["grid"][0], 2 * spec["grid"][1]
    channels = 3 * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(steps * patches_h * patches_w, channels, device=device, dtype=model.dtype)
    inputs = {"pixel_values_videos": pixels, "video_grid_thw": torch.tensor([[steps, patches_h, patches_w]], device=device)}
    encode_videos(model, inputs)  # warm-up
    sync(device)
    started = time.perf_counter()
    encode_videos(model, inputs)
    sync(device)
    return {"vision_ms_per_grid_step": round((time.perf_counter() - started) * 1000 / steps, 2)}


def memory_row(spec, dim, device, dtype) -> dict:
    from fluxmem import FluxMemConfig, FluxMemory, compress

    steps, (height, width) = spec["memory_steps"], spec["grid"]
    cells = height * width
    features = video_like_features(steps, height, width, dim, "cpu").to(device, dtype)
    config = FluxMemConfig(short_frames=8, medium_frames=64)
    push_ms, compress_ms = [], []
    for repeat in range(spec["repeats"] + 1):
        memory = FluxMemory(config, (height, width))
        sync(device)
        started = time.perf_counter()
        for step in range(steps):
            memory.push(features[step * cells : (step + 1) * cells])
        sync(device)
        middle = time.perf_counter()
        compress(features, (steps, height, width), config)
        sync(device)
        if repeat:
            push_ms.append((middle - started) * 1000 / steps)
            compress_ms.append((time.perf_counter() - middle) * 1000 / steps)
    return {"memory_update_ms_per_grid_step": round(min(push_ms), 3),
            "compress_ms_per_grid_step": round(min(compress_ms), 3),
            "memory_sizes": f"{steps} steps x {cells} tokens x {dim} dims, {str(dtype).replace('torch.', '')}"}


def stream_frames(count: int, height: int, width: int, seed: int = 0):
    """Video-like RGB frames: a fixed textured scene of which a random 30% of 28x28 cells get new
    content every second (so the memory keeps a realistic share)."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for _ in range(count):
        frame = frame.copy()
        changed = rng.random((height // 28, width // 28)) < 0.3
        for r, c in zip(*np.nonzero(changed)):
            frame[28 * r : 28 * r + 28, 28 * c : 28 * c + 28] = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        yield frame


def session_rows(model, processor, spec, deadline: float, log) -> list[dict]:
    from fluxmem import StreamSession

    height, width = 28 * spec["session_grid"][0], 28 * spec["session_grid"][1]
    session = StreamSession(model, processor, fps=1.0, min_pixels=height * width, max_pixels=height * width)
    moments = spec["session_seconds"]
    frames = stream_frames(max(moments), height, width)
    rows, pushed = [], 0
    for moment in moments:
        while pushed < moment and time.perf_counter() < deadline:
            session.push(next(frames), float(pushed))
            pushed += 1
        if pushed < moment:
            log(f"  session: time budget spent after {pushed} s of stream; {moment} s not reached")
            break
        answers = [session.ask(QUESTION, max_new_tokens=8) for _ in range(spec["repeats"])]
        answer = sorted(answers, key=lambda a: a.latency_ms)[len(answers) // 2]
        row = {"stream_s": moment, "answer_ms": round(answer.latency_ms, 1), "kept_tokens": answer.memory.get("kept"),
               "prompt_tokens": answer.prompt_tokens, "prefilled_tokens": answer.prefilled_tokens}
        rows.append(row)
        log(f"  session at {moment:>5} s: {row['answer_ms']:.1f} ms ({row['prompt_tokens']} tokens attended)")
    return rows


def table(results: dict) -> str:
    lines = [f"device: {results['device']} | model: {results['model']}"]
    lines.append(f"{'frames':>6} {'visual':>7} {'kept':>6} {'base ms':>9} {'FluxMem ms':>11} {'cut':>6} "
                 f"{'base GiB':>9} {'FluxMem GiB':>12} {'cut':>6}")
    for row in results.get("prefill", []):
        lines.append(f"{row['frames']:>6} {row['visual_tokens']:>7} {row['kept_tokens']:>6} {row['baseline_ms']:>9.1f} "
                     f"{row['fluxmem_ms']:>11.1f} {100 * row['latency_cut']:>5.1f}% {row['baseline_peak_bytes'] / 2**30:>9.3f} "
                     f"{row['fluxmem_peak_bytes'] / 2**30:>12.3f} {100 * row['peak_cut']:>5.1f}%")
    if "vision" in results:
        lines.append(f"vision tower: {results['vision']['vision_ms_per_grid_step']:.2f} ms per grid step (both modes)")
    if "memory" in results:
        m = results["memory"]
        lines.append(f"memory update: {m['memory_update_ms_per_grid_step']:.3f} ms per grid step (FluxMemory.push; goal <= 0.5 "
                     f"on an H100), batched compress {m['compress_ms_per_grid_step']:.3f} ms per grid step ({m['memory_sizes']})")
    rows = results.get("session", [])
    if rows:
        lines.append("session answer latency (1 fps): " + ", ".join(
            f"{r['stream_s'] // 60 if r['stream_s'] >= 60 else r['stream_s']}{' min' if r['stream_s'] >= 60 else ' s'} "
            f"{r['answer_ms']:.0f} ms" for r in rows))
        lines.append(f"  last / first: {rows[-1]['answer_ms'] / rows[0]['answer_ms']:.2f}x (goal <= 2x)")
    for name, error in results.get("errors", {}).items():
        lines.append(f"ERROR in {name}: {error}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (a test runs this)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop streaming when this much time is spent")
    args = parser.parse_args(argv)
    spec = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is visible; run on a GPU machine, or pass --smoke for the CPU check")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    started = time.perf_counter()
    deadline = started + args.budget_s

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    results: dict = {"errors": {}}

    def save() -> None:
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(results, handle, indent=1)

    model, processor = build_model(layers=spec["layers"], dtype=dtype, device=str(device), text=spec["text"],
                                   vision=spec["vision"])
    text = model.config.text_config
    results["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    results["model"] = (f"random Qwen2.5-VL, {text.num_hidden_layers} layers x {text.hidden_size} hidden, vision "
                        f"{model.config.vision_config.depth} blocks, {str(dtype).replace('torch.', '')}")
    results["torch"], results["transformers"] = torch.__version__, __import__("transformers").__version__
    log(f"model built on {results['device']}: {results['model']}")
    sections = [
        ("prefill", lambda: prefill_rows(model, processor, spec, device, log)),
        ("vision", lambda: vision_row(model, spec, device)),
        ("memory", lambda: memory_row(spec, text.hidden_size, device, dtype)),
        ("session", lambda: session_rows(model, processor, spec, deadline, log)),
    ]
    for name, run in sections:
        try:
            results[name] = run()
        except Exception as error:  # one failing section must not hide the others' figures
            results["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
        log(f"{name} done")
    results["total_s"] = round(time.perf_counter() - started, 1)
    save()
    print(table(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
