"""Runs vLLM (offline ``LLM``) on saved videos in a fresh process; prints one JSON line.

Used by ``tests/test_vllm_plugin.py``: vLLM starts engine processes with ``spawn``, so it runs
here, outside pytest's process, and its engine is gone when this script ends.

    python tests/_vllm_runner.py SPEC.json   # {"model", "fluxmem", "videos": [npy paths], ...}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "{videos}What is moving in the video?<|im_end|>\n<|im_start|>assistant\n"
)
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def video_item(frames: np.ndarray, fps: float = 2.0):
    count = int(frames.shape[0])
    metadata = {"total_num_frames": count, "fps": fps, "duration": count / fps,
                "frames_indices": list(range(count)), "do_sample_frames": False, "video_backend": "opencv"}  # fmt: skip
    return frames, metadata


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams

    spec = json.loads(Path(spec_path).read_text())
    fluxmem = spec.get("fluxmem")
    captured = capture_positions()
    llm = LLM(
        model=spec["model"],
        dtype=spec.get("dtype", "float32"),
        enforce_eager=True,
        seed=0,
        max_model_len=2048,
        enable_chunked_prefill=True,
        max_num_batched_tokens=spec.get("max_num_batched_tokens", 32),
        max_num_seqs=4,
        limit_mm_per_prompt={"video": 2, "image": 1},
        enable_mm_embeds=bool(spec.get("precomputed")),
        kv_cache_memory_bytes=256 << 20,  # a fixed KV cache: no check against the shared machine's free memory
        hf_overrides={"fluxmem": fluxmem} if fluxmem is not None else None,
    )
    params = SamplingParams(max_tokens=spec.get("max_tokens", 12), temperature=0.0)
    requests = []
    for group in spec["prompts"]:  # each prompt: video indices, "image" first for an image before them
        image = group[0] == "image"
        group = group[1:] if image else group
        videos = [video_item(np.load(spec["videos"][i])) for i in group]
        data = {"video": videos if len(videos) > 1 else videos[0]}
        if image:  # the first frame of the first video
            from PIL import Image

            data["image"] = Image.fromarray(np.load(spec["videos"][0])[0])
        text = (IMAGE if image else "") + VIDEO * len(group)
        requests.append({"prompt": PROMPT.format(videos=text), "multi_modal_data": data})
    outputs = llm.generate(requests, params, use_tqdm=False)
    result = {"requests": [], "positions": captured}
    for output in outputs:
        completion = output.outputs[0]
        result["requests"].append({
            "prompt_len": len(output.prompt_token_ids),
            "prompt_ids": list(output.prompt_token_ids),
            "tokens": list(completion.token_ids),
        })
    if fluxmem is not None:
        from fluxmem.serving.common import recent_memory_stats

        stats = recent_memory_stats(with_keep=True)
        result["memory"] = [dict(s, keep=s["keep"].nonzero().squeeze(1).tolist()) for s in stats]
    if spec.get("precomputed"):
        result["precomputed"] = run_precomputed(llm, spec, params)
    print("RESULT " + json.dumps(result))


def capture_positions() -> list:
    """Record the M-RoPE positions the model computes for each prompt (what the engine uses).

    The engine then runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so that the
    plugin's method can be wrapped here; entries: ``{"tokens", "positions", "delta"}``."""
    import os

    from fluxmem.serving.common import ModelMixin

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    captured = []
    original = ModelMixin.get_mrope_input_positions

    def wrapped(self, input_tokens, mm_features):
        positions, delta = original(self, input_tokens, mm_features)
        captured.append({"tokens": list(input_tokens), "positions": positions.tolist(), "delta": int(delta)})
        return positions, delta

    ModelMixin.get_mrope_input_positions = wrapped
    return captured


def run_precomputed(llm, spec, params):
    """The same prompts with the kept embeddings computed here, as a client would, and sent."""
    from transformers import AutoProcessor

    from fluxmem.memory import FluxMemConfig
    from fluxmem.serving.encoder import get_encoder

    processor = AutoProcessor.from_pretrained(spec["model"])
    encoder = get_encoder(spec["model"], device="cpu", dtype=torch.float32)
    config = FluxMemConfig(**{k: v for k, v in spec["fluxmem"].items() if k not in ("device", "dtype")})
    requests = []
    for group in spec["prompts"]:
        if group[0] == "image":
            continue
        items = []
        for i in group:
            frames = np.load(spec["videos"][i])
            inputs = processor.video_processor(videos=[frames], do_sample_frames=False, return_tensors="pt")
            (video,) = encoder.compress_videos(inputs["pixel_values_videos"], inputs["video_grid_thw"], config)
            items.append({"video_embeds": video.embeds, "video_grid_thw": inputs["video_grid_thw"],
                          "fluxmem_keep": video.keep})  # fmt: skip
        # several videos of one prompt: one dict, every field concatenated along its first dimension
        data = {"video": {key: torch.cat([item[key] for item in items]) for key in items[0]}}
        requests.append({"prompt": PROMPT.format(videos=VIDEO * len(group)), "multi_modal_data": data})
    outputs = llm.generate(requests, params, use_tqdm=False)
    return [{"prompt_len": len(o.prompt_token_ids), "tokens": list(o.outputs[0].token_ids)} for o in outputs]


if __name__ == "__main__":
    main(sys.argv[1])
