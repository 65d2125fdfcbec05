"""Prefill time and peak memory with and without FluxMem on a Qwen2.5-VL-shaped random model.

The model has Qwen2.5-VL's structure (windowed + full-attention vision blocks, 2x2 merge, temporal
patch 2, M-RoPE, GQA decoder) at a size this CPU can run; the video is a synthetic clip (static
textured background, a square jumping across it). Video features are encoded once; each setting
then runs in a fresh subprocess, and its peak memory is the growth of the resident set above its
resting size during the prefill (Linux peak-RSS reset), so earlier peaks cannot hide it.

    python benchmarks/prefill.py [--frames 64 --size 224 --layers 4 --hidden 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


def build(args):
    from fluxmem import Qwen2_5_VLForConditionalGeneration
    from fluxmem.testing import build_processor, build_tokenizer, shaped_qwen2_5_vl_config

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, max_pixels=args.size * args.size, min_pixels=28 * 28 * 4)
    config = shaped_qwen2_5_vl_config(tokenizer, hidden=args.hidden, layers=args.layers)
    config.vision_config.depth = 4
    config.vision_config.hidden_size = 128
    config.vision_config.intermediate_size = 256
    config.vision_config.num_heads = 2
    config.vision_config.fullatt_block_indexes = [3]
    config.vision_config.out_hidden_size = args.hidden
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return model, processor


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset the process's peak resident memory (Linux) and return the current resident size."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_kb("VmRSS")


def prepare_inputs(args, path: str) -> None:
    """Processor inputs and encoded video features, saved once so that each measured process
    starts from them (its peak memory is then the prefill's, not the vision encoder's)."""
    from fluxmem.inference import encode_videos
    from fluxmem.testing import moving_square_frames

    model, processor = build(args)
    frames = moving_square_frames(args.frames, height=args.size, width=args.size, step=56)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    messages = [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    metadata = [{"fps": 1.0, "total_num_frames": args.frames, "frames_indices": list(range(args.frames))}]
    inputs = processor(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False, do_resize=False,
                       video_metadata=metadata)
    encoded = encode_videos(model, inputs)
    model_inputs = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    torch.save({"inputs": model_inputs, "video": tuple(encoded["video"].pooler_output)}, path)


def one_run(args) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from fluxmem import get_state

    model, _ = build(args)
    saved = torch.load(args.inputs)
    model_inputs = saved["inputs"]
    encoded = {"video": BaseModelOutputWithPooling(pooler_output=saved["video"])}
    options = dict(use_fluxmem=args.mode == "fluxmem", short_frames=args.short_frames, medium_frames=args.medium_frames)
    times = []
    with torch.inference_mode():
        model(**model_inputs, mm_encoder_outputs=encoded, logits_to_keep=1, **options)  # warm-up
        resting_kb = _reset_peak_rss()
        for _ in range(args.repeats):
            started = time.perf_counter()
            model(**model_inputs, mm_encoder_outputs=encoded, logits_to_keep=1, **options)
            times.append((time.perf_counter() - started) * 1000)
        peak_kb = _status_kb("VmHWM")
    summary = get_state(model).summary()
    return {
        "mode": args.mode,
        "prompt_tokens": int(model_inputs["input_ids"].shape[1]),
        "visual_tokens": int((model_inputs["input_ids"] == model.config.video_token_id).sum()),
        "kept_visual_tokens": summary["kept"] if summary["videos"] else None,
        "prefill_ms": min(times),
        "peak_rss_growth_mb": (peak_kb - resting_kb) / 1024,
        "memory_ms": summary.get("memory_ms", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels (multiple of 28)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--short-frames", type=int, default=8)
    parser.add_argument("--medium-frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=["baseline", "fluxmem"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one_run(args)))
        return

    workdir = tempfile.mkdtemp(prefix="fluxmem-prefill-")
    args.inputs = os.path.join(workdir, "inputs.pt")
    prepare_inputs(args, args.inputs)
    rows = []
    for mode in ("baseline", "fluxmem"):
        command = [sys.executable, __file__, "--mode", mode] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "mode"
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    base, flux = rows
    print(f"model: Qwen2.5-VL-shaped random, {args.layers} decoder layers x {args.hidden} hidden; "
          f"video {args.frames} frames of {args.size}x{args.size}; torch threads {torch.get_num_threads()}")
    print(f"{'':10} {'prompt':>8} {'visual':>8} {'kept':>8} {'prefill ms':>11} {'prefill peak +MB':>17}")
    for row in rows:
        kept = row["kept_visual_tokens"] if row["kept_visual_tokens"] is not None else row["visual_tokens"]
        print(f"{row['mode']:10} {row['prompt_tokens']:8d} {row['visual_tokens']:8d} {kept:8d} "
              f"{row['prefill_ms']:11.1f} {row['peak_rss_growth_mb']:17.1f}")
    retained = flux["kept_visual_tokens"] / flux["visual_tokens"]
    print(f"retained visual fraction: {100 * retained:.1f}%  |  prefill speed-up: "
          f"{base['prefill_ms'] / flux['prefill_ms']:.2f}x  |  memory update inside prefill: {flux['memory_ms']:.1f} ms")


if __name__ == "__main__":
    main()
