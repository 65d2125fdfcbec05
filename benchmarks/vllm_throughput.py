"""Throughput of N concurrent video questions in vLLM: stock against FluxMem (and vLLM's EVS on a GPU).

One machine, one run per mode, each mode in a fresh process (its own vLLM engine). All N requests
go to ``LLM.generate`` at once, so continuous batching and chunked prefill schedule them together;
the time covers everything a request costs after the engine is up: the multimodal processor
(for FluxMem: the processor-side vision encoder and the memory), the prefill and the decoding.
Reported per mode: requests/s, prompt tokens per request (what the prefill processes), visual
tokens per request. EVS (``video_pruning_rate``) runs at FluxMem's measured retention, and only
where CUDA is present (vLLM's CPU runner cannot run it).

Without ``--model`` the model is a Qwen2.5-VL-shaped random model built here (no download):

    python benchmarks/vllm_throughput.py [--requests 8 --frames 32 --layers 4 --hidden 256]
    python benchmarks/vllm_throughput.py --model Qwen/Qwen2.5-VL-7B-Instruct --dtype bfloat16   # a GPU machine

Needs vLLM (``fluxmem-video[vllm]``) with fluxmem's plugin installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|video_pad|><|vision_end|>What is moving in the video?<|im_end|>\n<|im_start|>assistant\n"
)


def build_model(args, path: str) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from fluxmem.testing import (
        build_processor,
        build_tokenizer,
        instantiate_tiny,
        shaped_qwen2_5_vl_config,
    )

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, max_pixels=args.height * args.width, min_pixels=28 * 28 * 4)
    config = shaped_qwen2_5_vl_config(tokenizer, hidden=args.hidden, layers=args.layers)
    instantiate_tiny(Qwen2_5_VLForConditionalGeneration, config, processor, save_dir=path)


def videos(args) -> list:
    from fluxmem.testing import moving_square_frames

    out = []
    for i in range(args.requests):
        frames = moving_square_frames(args.frames, height=args.height, width=args.width, step=28 * (1 + i % 2), seed=i)
        if i % 3 == 2:  # some clips are still: FluxMem keeps far less of them
            frames = np.repeat(frames[:1], args.frames, axis=0)
        out.append(frames)
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(args) -> dict:
    import torch
    from vllm import LLM, SamplingParams

    overrides = None
    kwargs = {}
    if args.mode == "fluxmem":
        overrides = {"fluxmem": {"short_frames": args.short_frames, "medium_frames": args.medium_frames}}
    if args.mode == "evs":
        kwargs["video_pruning_rate"] = 1.0 - args.retention
    if not torch.cuda.is_available():
        kwargs["kv_cache_memory_bytes"] = 1 << 30  # a fixed KV cache on the CPU, whatever else runs there
    llm = LLM(model=args.model, dtype=args.dtype, enforce_eager=not torch.cuda.is_available(), seed=0,
              max_model_len=args.max_model_len, max_num_batched_tokens=args.max_num_batched_tokens,
              max_num_seqs=args.requests, limit_mm_per_prompt={"video": 1, "image": 0}, hf_overrides=overrides,
              **kwargs)  # fmt: skip
    requests = []
    for frames in videos(args):
        count = len(frames)
        metadata = {"total_num_frames": count, "fps": 2.0, "duration": count / 2.0,
                    "frames_indices": list(range(count)), "do_sample_frames": False, "video_backend": "opencv"}  # fmt: skip
        requests.append({"prompt": PROMPT, "multi_modal_data": {"video": (frames, metadata)}})
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(requests[:1], SamplingParams(max_tokens=1), use_tqdm=False)  # warm-up (loads the FluxMem encoder)
    llm.reset_mm_cache()  # every measured request is encoded again, none comes from the processor cache
    start = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    video_token = llm.get_tokenizer().convert_tokens_to_ids("<|video_pad|>")
    prompt = [len(o.prompt_token_ids) for o in outputs]
    visual = [sum(1 for t in o.prompt_token_ids if t == video_token) for o in outputs]
    return {"mode": args.mode, "seconds": seconds, "requests_per_s": len(outputs) / seconds,
            "prompt_tokens": float(np.mean(prompt)), "visual_tokens": float(np.mean(visual)),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path or id (default: a random Qwen2.5-VL-shaped model)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=8, help="concurrent video questions")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=112)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--short-frames", type=int, default=8)
    parser.add_argument("--medium-frames", type=int, default=64)
    parser.add_argument("--mode", choices=("stock", "fluxmem", "evs"), help=argparse.SUPPRESS)
    parser.add_argument("--retention", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print("RESULT " + json.dumps(one_run(args)))
        return

    import torch

    described = args.model or f"random Qwen2.5-VL-shaped, {args.layers} layers x {args.hidden} hidden"
    if args.model is None:
        args.model = os.path.join(tempfile.mkdtemp(prefix="fluxmem-vllm-bench-"), "model")
        build_model(args, args.model)
    forwarded = []
    for name in ("model", "dtype", "requests", "frames", "height", "width", "max_tokens", "max_model_len",
                 "max_num_batched_tokens", "short_frames", "medium_frames"):  # fmt: skip
        forwarded += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    rows = []
    modes = ["stock", "fluxmem"] + (["evs"] if torch.cuda.is_available() else [])
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    for mode in modes:
        command = [sys.executable, __file__, *forwarded, "--mode", mode]
        if mode == "evs":
            command += ["--retention", str(rows[1]["visual_tokens"] / rows[0]["visual_tokens"])]
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"the {mode} run failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(lines[-1].removeprefix("RESULT ")))
    print(f"machine: {rows[0]['device']}, {os.cpu_count()} CPU cores; model: {described}")
    print(f"{args.requests} concurrent requests, {args.frames} frames of {args.height}x{args.width} each, "
          f"{args.max_tokens} new tokens, max_num_batched_tokens={args.max_num_batched_tokens}")  # fmt: skip
    print(f"{'mode':10} {'requests/s':>11} {'prompt tok/req':>15} {'visual tok/req':>15} {'seconds':>8}")
    for row in rows:
        print(f"{row['mode']:10} {row['requests_per_s']:11.3f} {row['prompt_tokens']:15.1f} {row['visual_tokens']:15.1f} "
              f"{row['seconds']:8.2f}")  # fmt: skip
    if not torch.cuda.is_available():
        print("evs: not run (vLLM's CPU runner cannot run EVS; run this script on a GPU machine)")


if __name__ == "__main__":
    main()
