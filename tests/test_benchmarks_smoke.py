"""The benchmark scripts run end to end at tiny sizes on the CPU, so that they cannot rot.

Their figures are not checked here (timings belong to the scripts' own output), only that they
run, write what they promise and that the memory comparisons hold.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_gpu_suite_smoke_writes_every_section(tmp_path):
    out = tmp_path / "suite.json"
    done = _run("gpu_suite.py", "--smoke", "--out", str(out))
    results = json.loads(out.read_text())
    assert results["errors"] == {}
    assert [row["frames"] for row in results["prefill"]] == [16, 32]
    for row in results["prefill"]:
        assert 0 < row["kept_tokens"] < row["visual_tokens"]
        assert row["fluxmem_peak_bytes"] < row["baseline_peak_bytes"]
        assert row["baseline_ms"] > 0 and row["fluxmem_ms"] > 0
    assert results["memory"]["memory_update_ms_per_grid_step"] > 0
    assert results["vision"]["vision_ms_per_grid_step"] > 0
    assert [row["stream_s"] for row in results["session"]] == [4, 8]
    assert all(row["answer_ms"] > 0 and row["kept_tokens"] > 0 for row in results["session"])
    assert "session answer latency" in done.stdout


def test_prefill_memory_counts_bytes_and_fluxmem_stays_below_the_baseline(tmp_path):
    out = tmp_path / "prefill.json"
    _run("prefill_memory.py", "--frames", "16", "32", "--grid", "2x4", "--layers", "1", "--hidden", "128",
         "--intermediate", "256", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [row["frames"] for row in rows] == [16, 32]
    for row in rows:
        assert row["kept_tokens"] < row["visual_tokens"]
        assert 0 < row["fluxmem_peak_bytes"] < row["baseline_peak_bytes"]
        assert row["kept_only_peak_bytes"] > 0


def test_allocation_counter_counts_live_storages_not_views():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from prefill_memory import AllocationCounter
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch

    weight = torch.ones(1000, 250)  # 1 MB, allocated before: never counted
    with AllocationCounter() as counter:
        view = weight.t()[:10]  # a view: no allocation
        assert counter.live == 0
        a = torch.ones(1000, 500)  # 2 MB
        b = a * 2  # 2 MB more
        assert counter.live == counter.peak == 4_000_000
        del b
        assert counter.live == 2_000_000
        a.add_(1)  # in place: no allocation
        del a
        assert counter.live == 0 and counter.peak == 4_000_000
    del view


@pytest.mark.parametrize("device", ["cpu"])
def test_memory_overhead_runs_both_paths(device):
    done = _run("memory_overhead.py", "--steps", "12", "--tokens", "12", "--dim", "16", "--repeats", "1",
                "--device", device)
    assert "incremental FluxMemory.push" in done.stdout and "batched offline compress" in done.stdout
