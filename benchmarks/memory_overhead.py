"""Milliseconds per temporal grid step of the FluxMem memory (TAS + SDC + similarities).

Default sizes are Qwen2.5-VL-7B's at max_pixels = 512*28*28: 128 grid steps of 512 tokens x 3584
dims, float32. The features imitate video: a fixed scene whose tokens change in a random 30% of
cells per step, so that both TAS and SDC do real work.

    python benchmarks/memory_overhead.py [--steps 128 --tokens 512 --dim 3584 --device cpu|cuda]
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

    height, width = grid_for(args.tokens)
    features = video_like_features(args.steps, height, width, args.dim, args.device)
    config = FluxMemConfig(short_frames=8, medium_frames=64)
    cells = height * width

    per_step = []
    for repeat in range(args.repeats + 1):  # the first run warms up allocator and kernels
        memory = FluxMemory(config, (height, width))
        sync(args.device)
        started = time.perf_counter()
        for step in range(args.steps):
            memory.push(features[step * cells : (step + 1) * cells])
        sync(args.device)
        if repeat:
            per_step.append((time.perf_counter() - started) / args.steps * 1000)
    kept = memory.keep_mask()

    sync(args.device)
    started = time.perf_counter()
    result = compress(features, (args.steps, height, width), config)
    sync(args.device)
    offline_ms = (time.perf_counter() - started) * 1000

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), torch threads: {torch.get_num_threads()}")
    print(f"sizes: {args.steps} grid steps x {cells} tokens ({height}x{width}) x {args.dim} dims, float32")
    print(f"memory update per grid step: {min(per_step):.2f} ms (best of {args.repeats}), "
          f"mean {sum(per_step) / len(per_step):.2f} ms")
    print(f"offline compress of the whole video: {offline_ms:.0f} ms ({offline_ms / args.steps:.2f} ms per step, "
          "includes the merged-feature copy)")
    print(f"retained tokens: {int(kept.sum())}/{kept.numel()} ({100 * result.retained_fraction:.1f}%)")
    counts = result.tier_counts()
    print("per tier (frames, kept/tokens): " + ", ".join(
        f"{tier} {entry['frames']} {entry['kept']}/{entry['tokens']}" for tier, entry in counts.items()))


if __name__ == "__main__":
    main()
