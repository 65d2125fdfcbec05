"""EVS and VidCom² against vLLM itself (runs in the vLLM venv, ``.ci/vllm.sh``; skipped elsewhere).

Our ``evs`` and ``vidcom2`` memories must keep exactly the tokens vLLM's ``compute_retention_mask``
keeps at the same rate: on the stored real-clip features (``tests/data/vllm_memory_vectors.pt``,
whose masks must still be what this vLLM computes) and on seeded features at more grids, rates and
dtypes.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import fluxmem.memories as memories

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("FLUXMEM_REQUIRE_VLLM") == "1":
    raise ImportError("vLLM is not importable in the venv that .ci/vllm.sh built")
pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed here; `bash .ci/vllm.sh` runs these tests")
MERGE = 2  # vLLM takes the grid in patches and the spatial merge size


def _vllm(name):
    from vllm.multimodal.video_prune import evs, vidcom2

    return {"evs": evs, "vidcom2": vidcom2}[name]


def test_the_stored_masks_are_what_this_vllm_computes():
    data = torch.load(Path(__file__).with_name("data") / "vllm_memory_vectors.pt", weights_only=True)
    for case in data["cases"]:
        t, h, w = case["grid_thw"]
        for key, stored in case["masks"].items():
            name, rate = key.split(":")
            mask = _vllm(name).compute_retention_mask(case["features"], (t, h * MERGE, w * MERGE), MERGE, float(rate))
            assert torch.equal(mask, stored), (case["clip"], case["grid_thw"], key)


@pytest.mark.parametrize("name", ["evs", "vidcom2"])
@pytest.mark.parametrize("grid", [(1, 3, 3), (2, 4, 4), (7, 5, 3), (16, 6, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_mask_equals_vllms_on_seeded_features(name, grid, dtype):
    t, h, w = grid
    g = torch.Generator().manual_seed(t * 100 + h * 10 + w)
    base = torch.randn(h * w, 48, generator=g)
    features = (base + torch.randn(t, h * w, 48, generator=g) * torch.rand(t, 1, 1, generator=g)).reshape(-1, 48).to(dtype)
    for rate in (0.0, 0.1, 0.33, 0.5, 0.8, 0.95, 0.999):
        theirs = _vllm(name).compute_retention_mask(features, (t, h * MERGE, w * MERGE), MERGE, rate)
        ours = memories.get(name, rate=rate).compress(features, grid).keep
        assert torch.equal(ours, theirs), (name, grid, dtype, rate)
        assert int(ours.sum()) == _vllm(name).compute_retained_tokens_count(h * w, t, rate)
