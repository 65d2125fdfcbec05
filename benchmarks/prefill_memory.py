"""Peak bytes allocated by torch during ONE prefill: the unpruned model, FluxMem, and the unpruned
model fed only the tokens FluxMem keeps.

A random-weight Qwen2.5-VL-shaped model built from its config (no download) at the 7B width:
3584 hidden, 18944 intermediate, 28 query / 4 key-value heads, a few decoder layers. The vision
tower would dominate the CPU time and is the same in every mode, so the video enters as
precomputed encoder outputs (``mm_encoder_outputs``, video-like features: a scene whose cells
change at random) and the measured region is the language-model prefill: embedding, placement,
positions, FluxMem's memory and pruning (FluxMem mode), the decoder layers, last-token logits.

Bytes are counted, not processes: on the CPU every tensor storage created inside the prefill is
counted from its allocation to its release (a ``TorchDispatchMode``), on a GPU the caching
allocator's ``max_memory_allocated`` above what was allocated before. Weights and the inputs
prepared before the call are not counted.

"kept only" is the stock model on the same prompt with the dropped video tokens removed (the kept
video features, one grid row of K tokens): what an oracle pruning would cost. FluxMem's overhead
over it is what the memory itself costs (the full-size embeddings of the input, the memory's
working set and the pruning).

    python benchmarks/prefill_memory.py [--frames 64 128 256 --grid 4x4 --layers 2 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_overhead import video_like_features

QWEN2_5_VL_7B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})


class AllocationCounter(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while active (on ``device_type``).

    An op's output counts when its storage is new (not one of its inputs' storages: views and
    in-place results are not allocations); it stops counting when the storage is freed.
    """

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, int] = {}

    def _release(self, key: int, size: int) -> None:
        if self._tracked.pop(key, None) is not None:
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.device.type == self.device_type}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.device_type:
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in inputs or key in self._tracked:
                continue
            self._tracked[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key, size)
        return out


def peak_bytes(call, device: torch.device) -> tuple[int, float, object]:
    """``(peak bytes allocated during call(), seconds, its result)``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        result = call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, time.perf_counter() - started, result
    counter = AllocationCounter(device.type)
    started = time.perf_counter()
    with counter:
        result = call()
    return counter.peak, time.perf_counter() - started, result


def build_model(*, layers: int, dtype: torch.dtype, device: str, text: dict | None = None, vision: dict | None = None,
                seed: int = 0):
    """``(model, processor)``: a random Qwen2.5-VL (FluxMem switch installed) from its config,
    created directly on ``device`` in ``dtype``; ``text``/``vision``: config overrides."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    import fluxmem
    from fluxmem.testing import build_processor, build_tokenizer, tiny_qwen2_5_vl_config

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, min_pixels=28 * 28, max_pixels=28 * 28 * 4096)
    config = tiny_qwen2_5_vl_config(tokenizer, **{**QWEN2_5_VL_7B_TEXT, "num_hidden_layers": layers, **(text or {})})
    for key, value in (vision or {}).items():
        setattr(config.vision_config, key, value)
    config.vision_config.out_hidden_size = config.text_config.hidden_size
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    fluxmem.enable(model)  # on by default; the baselines pass use_fluxmem=False
    return model.eval(), processor


def video_prompt(processor, steps: int, grid_hw: tuple[int, int], question: str = "What moves?") -> dict:
    """Processor inputs of a chat prompt with one video of ``steps`` grid steps of ``grid_hw``
    merged tokens, without its pixels (the features are given separately)."""
    frames = 2 * steps
    video = torch.zeros(frames, 3, 28 * grid_hw[0], 28 * grid_hw[1], dtype=torch.uint8)
    messages = [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    metadata = [{"fps": 2.0, "total_num_frames": frames, "frames_indices": list(range(frames))}]
    inputs = processor(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False, do_resize=False,
                       video_metadata=metadata)
    inputs.pop("pixel_values_videos")
    grid = inputs["video_grid_thw"][0].tolist()
    if grid != [steps, 2 * grid_hw[0], 2 * grid_hw[1]]:
        raise RuntimeError(f"the processor made grid {grid}, expected {[steps, 2 * grid_hw[0], 2 * grid_hw[1]]}")
    return dict(inputs)


def kept_only_prompt(inputs: dict, video_token_id: int, keep: torch.Tensor) -> dict:
    """The same prompt with the video tokens that ``keep`` drops removed: one video of a single
    grid row of the K kept tokens (positions are then those of a K-token row; the cost is the same)."""
    ids = inputs["input_ids"]
    is_video = ids[0] == video_token_id
    stay = torch.ones_like(is_video)
    stay[is_video] = keep.to(stay.device)
    kept = int(keep.sum())
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == ids.shape[1]:
            out[key] = value[:, stay]
        else:
            out[key] = value
    out["video_grid_thw"] = torch.tensor([[1, 2, 2 * kept]])
    return out


def encoder_outputs(features: torch.Tensor) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"video": BaseModelOutputWithPooling(pooler_output=(features,))}


def measure_sizes(model, processor, *, frames_list, grid_hw, short_frames, medium_frames, device, dtype,
                  log=print) -> list[dict]:
    """Peak bytes and wall time of one prefill per mode and size."""
    from fluxmem import get_state
    from fluxmem.memory import FluxMemConfig, compress

    config = FluxMemConfig(short_frames=short_frames, medium_frames=medium_frames)
    video_token_id = model.config.video_token_id
    rows = []
    for frames in frames_list:
        steps = frames // 2
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in video_prompt(processor, steps, grid_hw).items()}
        features = video_like_features(steps, grid_hw[0], grid_hw[1], model.config.text_config.hidden_size,
                                       "cpu").to(device, dtype)
        result = compress(features, (steps, *grid_hw), config)
        kept_features = result.kept_features()
        kept_inputs = kept_only_prompt(inputs, video_token_id, result.keep)
        del result
        flux = {"short_frames": short_frames, "medium_frames": medium_frames}
        calls = {
            "baseline": (inputs, features, {"use_fluxmem": False}),
            "fluxmem": (inputs, features, {"use_fluxmem": True, **flux}),
            "kept_only": (kept_inputs, kept_features, {"use_fluxmem": False}),
        }
        row = {"frames": frames, "grid_steps": steps, "visual_tokens": int(features.shape[0]),
               "kept_tokens": int(kept_features.shape[0]), "prompt_tokens": int(inputs["input_ids"].shape[1])}
        with torch.inference_mode():
            for mode, (prompt, video, options) in calls.items():
                def call(prompt=prompt, video=video, options=options):
                    return model(**prompt, mm_encoder_outputs=encoder_outputs(video), logits_to_keep=1, **options)

                peak, seconds, _ = peak_bytes(call, torch.device(device))
                row[f"{mode}_peak_bytes"] = int(peak)
                row[f"{mode}_s"] = round(seconds, 3)
                if mode == "fluxmem" and get_state(model).summary()["kept"] != row["kept_tokens"]:
                    raise RuntimeError("the FluxMem prefill did not keep the tokens compress keeps")
        row["fluxmem_below_baseline"] = row["fluxmem_peak_bytes"] < row["baseline_peak_bytes"]
        row["overhead_over_kept_only_bytes"] = row["fluxmem_peak_bytes"] - row["kept_only_peak_bytes"]
        rows.append(row)
        log(format_row(row))
        del inputs, features, kept_features, kept_inputs, calls, prompt, video
    return rows


HEADER = (f"{'frames':>6} {'visual':>7} {'kept':>6} {'baseline MiB':>13} {'FluxMem MiB':>12} {'FluxMem/base':>13} "
          f"{'kept-only MiB':>14} {'overhead MiB':>13} {'overhead %':>11}")


def format_row(row: dict) -> str:
    mib = 2.0**20
    base, flux, oracle = row["baseline_peak_bytes"], row["fluxmem_peak_bytes"], row["kept_only_peak_bytes"]
    overhead = row["overhead_over_kept_only_bytes"]
    return (f"{row['frames']:>6} {row['visual_tokens']:>7} {row['kept_tokens']:>6} {base / mib:>13.1f} {flux / mib:>12.1f} "
            f"{flux / base:>12.2f}x {oracle / mib:>14.1f} {overhead / mib:>13.1f} {100 * overhead / oracle:>10.1f}%")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 128, 256], help="raw frames (2 per grid step)")
    parser.add_argument("--grid", default="4x4", help="merged tokens per grid step, HxW (7B at 448x896 pixels: 16x32)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers")
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--intermediate", type=int, default=18944)
    parser.add_argument("--short-frames", type=int, default=8)
    parser.add_argument("--medium-frames", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--out", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    grid_hw = tuple(int(v) for v in args.grid.lower().split("x"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    heads = max(1, args.hidden // 128)
    text = dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_attention_heads=heads,
                num_key_value_heads=max(1, heads // 7))
    started = time.perf_counter()
    model, processor = build_model(layers=args.layers, dtype=dtype, device=args.device, text=text)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    print(f"device: {device_name}; model: random Qwen2.5-VL, {args.layers} decoder layers x {args.hidden} hidden "
          f"({args.intermediate} intermediate), {dtype}; video: {grid_hw[0]}x{grid_hw[1]} merged tokens per grid "
          f"step (2 frames), precomputed encoder outputs; FluxMem {args.short_frames}/{args.medium_frames} "
          f"short/medium frames")
    print("peak = bytes allocated by torch during one prefill (weights and prepared inputs excluded)")
    print(HEADER)
    rows = measure_sizes(model, processor, frames_list=args.frames, grid_hw=grid_hw, short_frames=args.short_frames,
                         medium_frames=args.medium_frames, device=args.device, dtype=dtype)
    print(f"FluxMem below the baseline at every size: {'yes' if all(r['fluxmem_below_baseline'] for r in rows) else 'NO'}"
          f"  (total {time.perf_counter() - started:.0f} s)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"device": device_name, "dtype": str(dtype), "layers": args.layers, "hidden": args.hidden,
                       "grid_hw": list(grid_hw), "rows": rows}, handle, indent=1)
    return 0 if all(r["fluxmem_below_baseline"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
