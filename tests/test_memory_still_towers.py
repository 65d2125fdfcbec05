"""A still camera and a black screen through each family's real vision tower (tiny random
weights): the memory sees no scene change, and its decisions equal the literal transcription of
algorithm.md token for token (ties decided by the rules, not by rounding)."""

import pytest
import torch
from reference_fluxmem import reference_compress

from fluxmem import FluxMemConfig, FluxMemory, compress
from fluxmem.testing import build_tiny_qwen2_5_vl
from fluxmem.testing_families import FAMILIES, build_tiny, video_inputs

CONFIG = dict(short_frames=4, medium_frames=4)


def _video_features(family: str, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    model, processor = build_tiny_qwen2_5_vl() if family == "qwen2_5_vl" else build_tiny(family)
    inputs = video_inputs(processor, frames)
    grid = inputs["video_grid_thw"]
    with torch.no_grad():
        encoded = model.model.get_video_features(inputs["pixel_values_videos"], grid, return_dict=True)
    merge = int(model.config.vision_config.spatial_merge_size)
    t, h, w = (int(v) for v in grid[0])
    return torch.cat(encoded.pooler_output), (t, h // merge, w // merge)


def _still(kind: str) -> torch.Tensor:
    if kind == "black":
        return torch.zeros(16, 3, 112, 160, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 112, 160), generator=g, dtype=torch.uint8)
    return image.expand(16, -1, -1, -1).contiguous()


@pytest.mark.parametrize("kind", ["black", "still"])
@pytest.mark.parametrize("family", ("qwen2_5_vl",) + FAMILIES)
def test_a_still_video_through_the_vision_tower_has_no_scene_change(family, kind):
    features, (t, h, w) = _video_features(family, _still(kind))
    assert t == 8 and h * w > 1
    cells = h * w
    memory = FluxMemory(FluxMemConfig(**CONFIG), (h, w))
    changes = [memory.push(features[i * cells : (i + 1) * cells]).change_fraction for i in range(t)]
    assert changes[0] is None
    assert [float(c) for c in changes[1:]] == [0.0] * (t - 1)
    result = compress(features, (t, h, w), FluxMemConfig(**CONFIG))
    assert torch.equal(result.keep, memory.keep_mask())
    keep, _ = reference_compress(features, (t, h, w), **CONFIG)
    assert torch.equal(result.keep, keep)
