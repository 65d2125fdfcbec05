"""Milliseconds per temporal grid step of the FluxMem memory (TAS + SDC + similarities), both paths,
against the floor, all in the same run.

- floor: ONE READ PASS over the same features, ``features.sum()`` (every byte read once, nothing
  written: the memory bandwidth's bound). No memory update can cost less: every token's features
  must be read at least once to decide anything about it. Printed beside it, for context, one
  float32 normalisation pass ``x / max(||x||, 1e-8)`` into a reused buffer, 4 steps at a time (read
  twice, write once: the first of the passes the memory makes, see ``fluxmem.memory.neighbourhood``);
- incremental: ``FluxMemory.push`` one grid step at a time (what a stream pays per step);
- batched offline: ``compress`` over the whole video at once (what a prefill pays), everything it
  returns included (keep mask, per-frame records, anchors and their means), and also with the kept
  features gathered (``CompressResult.kept_features``).

Each path's figure is also printed as a multiple of the floor (the goal is <= 3x).

Default sizes are Qwen2.5-VL-7B's at max_pixels = 512*28*28: 128 grid steps of 512 tokens x 3584
dims, float32. The features imitate video: a fixed scene whose tokens change in a random 30% of
cells per step, so that both TAS and SDC do real work. The published memory code's figure on the
same tokens (``--published-ms``, 172 ms per grid step measured on the project's 2-core x86 CPU)
is printed beside ours as a ratio; it is only comparable on that machine.

    python benchmarks/memory_overhead.py [--steps 128 --tokens 512 --dim 3584 --device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from fluxmem import FluxMemConfig, FluxMemory, compress


def video_like_features(steps: int, height: int, width: int, dim: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    scene = torch.randn(height * width, dim, generator=g)
    frames = []
    current = scene
    for _ in range(steps):
        changed = torch.rand(height * width, 1, generator=g) < 0.3
        current = torch.where(changed, torch.randn(height * width, dim, generator=g), current)  # new content
        frames.append(current + 0.05 * torch.randn(height * width, dim, generator=g))
    return torch.cat(frames).to(device)


def grid_for(tokens: int) -> tuple[int, int]:
    """A landscape grid with ``tokens`` cells (512 -> 16 x 32)."""
    height = int(tokens**0.5)
    while tokens % height:
        height -= 1
    return height, tokens // height


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--published-ms", type=float, default=172.0,
                        help="the published memory code's ms per grid step on the same tokens (2-core x86 CPU)")
    args = parser.parse_args()

    height, width = grid_for(args.tokens)
    features = video_like_features(args.steps, height, width, args.dim, args.device)
    config = FluxMemConfig(short_frames=8, medium_frames=64)
    cells = height * width

    def per_step(run, repeats=args.repeats):
        """``(wall, cpu)``: ms per grid step of ``run()``, one figure per repeat after a warm-up
        run (allocator, kernels, caches). CPU time counts this process only (all its threads), so
        its ratios hold on a machine that other processes share."""
        wall, cpu = [], []
        for repeat in range(repeats + 1):
            sync(args.device)
            started, started_cpu = time.perf_counter(), time.process_time()
            value = run()
            sync(args.device)
            if repeat:
                wall.append((time.perf_counter() - started) / args.steps * 1000)
                cpu.append((time.process_time() - started_cpu) / args.steps * 1000)
        return wall, cpu, value

    normalised = torch.empty(4 * cells, args.dim, device=args.device)

    def normalise_pass():
        for step in range(0, args.steps, 4):
            chunk = features[step * cells : (step + 4) * cells]
            norm = chunk.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            torch.div(chunk, norm, out=normalised[: chunk.shape[0]])

    def push_all():
        memory = FluxMemory(config, (height, width))
        for step in range(args.steps):
            memory.push(features[step * cells : (step + 1) * cells])
        return memory

    floor = per_step(features.sum)
    normalising = per_step(normalise_pass)
    pushing = per_step(push_all)
    compressing = per_step(lambda: compress(features, (args.steps, height, width), config))
    gathering = per_step(lambda: compress(features, (args.steps, height, width), config).kept_features())
    kept, result = pushing[2].keep_mask(), compressing[2]
    if not torch.equal(result.keep, kept):
        raise RuntimeError("the batched and the incremental paths disagree")

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), torch threads: {torch.get_num_threads()}, "
          f"load average now {os.getloadavg()[0]:.2f} (other processes on the machine slow every figure)")
    print(f"sizes: {args.steps} grid steps x {cells} tokens ({height}x{width}) x {args.dim} dims, float32")
    published = args.published_ms
    rows = [
        ("floor: one read pass (sum)", floor),
        ("  float32 normalisation pass", normalising),
        ("incremental FluxMemory.push", pushing),
        ("batched offline compress", compressing),
        ("  + kept features gathered", gathering),
    ]
    on_cpu = args.device == "cpu"
    print(f"{'ms per grid step':<30} {'best':>8} {'mean':>8} {'x floor':>8}"
          + (f" {'cpu ms':>8} {'x floor':>8}" if on_cpu else "") + f" {'vs published ' + str(published) + ' ms':>22}")
    for name, (wall, cpu, _) in rows:
        best = min(wall)
        line = f"{name:<30} {best:>8.3f} {sum(wall) / len(wall):>8.3f} {best / min(floor[0]):>7.1f}x"
        if on_cpu:
            line += f" {min(cpu):>8.3f} {min(cpu) / min(floor[1]):>7.1f}x"
        print(line + f" {published / best:>21.1f}x")
    print(f"(wall clock: best and mean of {args.repeats} runs; 'x floor' compares best with best; 'cpu ms': "
          "this process's CPU time, best run; the published figure was measured on the 2-core x86 CPU only)")
    print(f"retained tokens: {int(kept.sum())}/{kept.numel()} ({100 * result.retained_fraction:.1f}%), "
          f"{result.anchor_index.numel()} long-term anchors")
    counts = result.tier_counts()
    print("per tier (frames, kept/tokens): " + ", ".join(
        f"{tier} {entry['frames']} {entry['kept']}/{entry['tokens']}" for tier, entry in counts.items()))


if __name__ == "__main__":
    main()
