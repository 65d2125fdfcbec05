"""``scripts/lmms_eval_recipes.sh`` for real: a run on a tiny model and a local two-document
Video-MME task writes results and exits 0; a run that fails exits non-zero (lmms-eval itself
logs the error and exits 0, so the script checks that results were written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

SCRIPT = Path(__file__).parents[1] / "scripts" / "lmms_eval_recipes.sh"
DOCS = [  # Video-MME's fields; the scorer reads "answer" and the letter of the reply
    {
        "video_id": f"{i:03d}", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
        "url": "local", "videoID": f"vid{i}", "question_id": f"{i:03d}-1", "task_type": "Counting Problem",
        "question": f"Where is the red square? ({i})", "options": ["A. left", "B. right", "C. top", "D. bottom"],
        "answer": "B",
    }
    for i in range(2)
]


@pytest.fixture(scope="module")
def local_task(tmp_path_factory, tiny_model_dir):
    """HF_HOME with Video-MME's video layout, and a two-document task that includes lmms-eval's own
    videomme.yaml (prompt, scorer, metric) but reads its documents from a local JSON file."""
    import lmms_eval

    from fluxmem.testing import moving_square_frames, write_video

    root = tmp_path_factory.mktemp("recipes")
    data = root / "hf" / "videomme" / "data"
    data.mkdir(parents=True)
    for i in range(2):
        write_video(data / f"vid{i}.mp4", moving_square_frames(6 + 2 * i, height=112, width=112, step=28), fps=2.0)
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "videomme_two.json").write_text(json.dumps(DOCS))
    real = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
    (tasks / "videomme_two.yaml").write_text(
        f"include: {real}\ntask: videomme_two\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: videomme_two.json\n"
        "generation_kwargs:\n  max_new_tokens: 2\n  do_sample: false\n"
    )
    return root


def _recipe(root: Path, out: Path, model, *args):
    env = {
        **os.environ,
        "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1", "NUM_PROCESSES": "1",
        "MODEL": str(model), "DTYPE": "float32", "ATTN": "sdpa", "EXTRA_ARGS": "device=cpu",
        "TASKS": "videomme_two", "INCLUDE_PATH": str(root / "tasks"), "OUT": str(out),
        # the script runs `python`: the interpreter of this test run, as in an activated venv
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    env.pop("DRY_RUN", None)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=400, check=False)


def test_videomme_recipe_on_a_local_two_document_task_writes_results(local_task, tiny_model_dir):
    out = local_task / "out"
    run = _recipe(local_task, out, tiny_model_dir, "videomme")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [results_file] = (out / "videomme_two-fluxmem").glob("*/*_results.json")
    results = json.loads(results_file.read_text())
    assert "videomme_perception_score,none" in results["results"]["videomme_two"]
    [samples_file] = (out / "videomme_two-fluxmem").glob("*/*_samples_videomme_two.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sorted(s["doc_id"] for s in samples) == [0, 1]
    # the recipe's published settings reached the plugin, and batch_size only once (lmms-eval's own flag)
    model_args = results["config"]["model_args"]
    assert "medium_frames=512" in model_args and "max_pixels=100352" in model_args and "use_fluxmem=True" in model_args
    assert "batch_size" not in model_args
    assert "FluxMem kept" in run.stderr  # the plugin's memory summary: the memory ran
    assert f"task videomme_two results: {results_file}" in run.stderr


def test_a_recipe_that_fails_exits_non_zero(local_task, tmp_path):
    missing = tmp_path / "no-such-model"
    run = _recipe(local_task, tmp_path / "out", missing, "videomme")
    assert run.returncode == 1, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last == "recipe videomme: 1 of 1 task(s) failed: videomme_two"
    assert not list((tmp_path / "out").glob("**/*_results.json"))


def test_dry_run_gives_batch_size_once_and_falls_back_to_sdpa_without_flash_attn():
    env = {**os.environ, "DRY_RUN": "1", "NUM_PROCESSES": "1"}
    env.pop("ATTN", None)
    run = subprocess.run(["bash", str(SCRIPT), "videomme"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    [command] = [line.split() for line in run.stdout.splitlines()]
    model_args = command[command.index("--model_args") + 1]
    assert "batch_size" not in model_args and command.count("--batch_size") == 1
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        assert "attn_implementation=sdpa" in model_args
        assert "flash-attn is not installed: using attn_implementation=sdpa" in run.stderr
    else:
        assert "attn_implementation=flash_attention_2" in model_args


def test_unknown_recipe_is_a_usage_error():
    run = subprocess.run(["bash", str(SCRIPT), "nope"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and "unknown recipe 'nope'" in run.stderr
