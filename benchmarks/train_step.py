"""Time and peak memory of one training step with and without FluxMem (``fluxmem train``'s step).

A random Qwen2.5-VL-shaped model (real structure: windowed + full-attention vision blocks, 2x2
merger, M-RoPE language model; sizes chosen to fit a CPU) trains on one synthetic video
conversation: forward with labels, backward, AdamW step, vision tower frozen as in the recipe.
Peak memory is the process's resident high-water mark above the level before the steps (CPU,
reset per mode through /proc/self/clear_refs) or ``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/train_step.py [--frames 32] [--size 224] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def build(args):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from fluxmem.adapters import install
    from fluxmem.memory import FluxMemConfig
    from fluxmem.testing import build_processor, build_tokenizer, tiny_qwen2_5_vl_config

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, max_pixels=args.size * args.size)
    config = tiny_qwen2_5_vl_config(
        tokenizer, hidden_size=args.hidden, intermediate_size=args.hidden * 3, num_hidden_layers=args.layers,
        num_attention_heads=8, num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
    )
    config.vision_config.hidden_size = 256
    config.vision_config.intermediate_size = 768
    config.vision_config.num_heads = 4
    config.vision_config.depth = 4
    config.vision_config.fullatt_block_indexes = [3]
    config.vision_config.window_size = 112
    config.vision_config.out_hidden_size = args.hidden
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(args.device)
    install(model, FluxMemConfig(short_frames=args.short_frames, medium_frames=args.medium_frames), default_active=False)
    return model, processor


def batch_for(processor, args):
    from fluxmem.testing import moving_square_frames
    from fluxmem.train.data import assistant_labels

    frames = moving_square_frames(args.frames, height=args.size, width=args.size)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    messages = [
        {"role": "user", "content": [{"type": "video", "video": "x"}, {"type": "text", "text": "What is moving?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square moves from the left to the right."}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    inputs = processor(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False, fps=2.0)
    inputs["labels"] = assistant_labels(inputs["input_ids"][0], processor.tokenizer).unsqueeze(0)
    return {k: v.to(args.device) for k, v in inputs.items()}


def run_mode(model, batch, args, use_fluxmem: bool) -> dict:
    import fluxmem
    from fluxmem.train import TrainConfig, prepare_parameters
    from fluxmem.train.trainer import param_groups

    prepare_parameters(model, TrainConfig(model="x", datasets=["x"]))
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(param_groups(model, {"llm": 1e-5, "merger": 1e-5, "vision": 1e-6}, 0.01))
    cuda = args.device.startswith("cuda")

    def step():
        loss = model(**batch, use_fluxmem=use_fluxmem).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up (optimizer state allocated)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        base = _rss_kib("VmRSS") * 1024
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    summary = fluxmem.get_state(model).summary() if use_fluxmem else None
    tokens = int(batch["input_ids"].shape[1])
    visual = int((batch["input_ids"] == model.config.video_token_id).sum())
    kept = summary["kept"] if summary else visual
    return {
        "mode": "FluxMem" if use_fluxmem else "baseline",
        "step_s": sorted(times)[len(times) // 2],
        "peak_mib": max(0, peak - base) / 2**20,
        "visual": visual,
        "kept": kept,
        "sequence": tokens - visual + kept,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32, help="raw frames (even)")
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels (multiple of 28)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--short-frames", type=int, default=8)
    parser.add_argument("--medium-frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", choices=["baseline", "fluxmem"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:  # one mode in a fresh process, so that allocator state of the other cannot leak in
        model, processor = build(args)
        row = run_mode(model, batch_for(processor, args), args, args.mode == "fluxmem")
        if not args.device.startswith("cuda"):
            row["peak_mib"] = _rss_kib("VmHWM") / 1024  # the whole process: model, optimizer, activations
        print(json.dumps(row))
        return
    params = sum(p.numel() for p in build(args)[0].parameters()) / 1e6
    print(f"model {params:.1f}M parameters, video {args.frames} frames of {args.size}x{args.size}, "
          f"memory short={args.short_frames} medium={args.medium_frames} raw frames, device {args.device}, "
          f"median of {args.steps} steps; each mode in a fresh process"
          + ("" if args.device.startswith("cuda") else ", peak = the process's peak resident memory"))
    rows = []
    for mode in ("baseline", "fluxmem"):
        command = [sys.executable, __file__, "--mode", mode] + [
            f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key != "mode"
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(f"{'mode':<9} {'step (s)':>9} {'peak (MiB)':>11} {'visual tokens':>14} {'retained':>9} {'LLM seq':>8}")
    for row in rows:
        print(f"{row['mode']:<9} {row['step_s']:>9.3f} {row['peak_mib']:>11.1f} {row['kept']:>6}/{row['visual']:<7} "
              f"{row['kept'] / row['visual']:>9.3f} {row['sequence']:>8}")
    print(f"speed-up x{rows[0]['step_s'] / rows[1]['step_s']:.2f}")


if __name__ == "__main__":
    main()
