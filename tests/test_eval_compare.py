"""Memory methods side by side: ``fluxmem eval ... --memory a,b,c --budget ...`` and ``fluxmem compare``.

The tiny random Qwen2.5-VL answers StreamingBench's synthetic fixture: its replies mean nothing,
but they are exact, so every method's records can be compared with a run of that method alone.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from fluxmem.cli import main
from fluxmem.eval.runner import (
    VOLATILE_FIELDS,
    gather_records,
    method_dir_name,
    run_comparison,
    split_methods,
)
from fluxmem.eval.synthetic import write_streamingbench_fixture

METHODS = ("fluxmem", "recent:4", "evs", "random")
# real-time tasks: one model call per question, so each question is decoded and encoded exactly once
TASKS = ("OP,CR,CS,ATP",)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_streamingbench_fixture(tmp_path_factory.mktemp("bench") / "sb")


def _args(model_dir, fx, out, *extra, fluxmem_flags=True):
    flags = ["--short-frames", "2", "--medium-frames", "4"] if fluxmem_flags else []
    return ["eval", "streamingbench", "--annotations", str(fx["annotations"]), "--videos", str(fx["videos"]),
            "--out", str(out), "--model", str(model_dir), "--device", "cpu", "--fps", "0.5", "--max-frames", "8",
            "--max-pixels", "12544", *flags, "--max-new-tokens", "3", "--no-progress", "--tasks", *TASKS, *extra]


def _records(folder):
    return {r["uid"]: r for r in gather_records(folder)}


def _stable(records):
    return {uid: {k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for uid, r in records.items()}


@pytest.fixture(scope="module")
def compared(bench, tiny_model_dir, tmp_path_factory):
    """One comparison at match:fluxmem, with decoding and encoding counted."""
    import fluxmem.inference
    import fluxmem.video

    counts = {"decode": 0, "encode": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    out = tmp_path_factory.mktemp("compare") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(printed):
        patch.setattr(fluxmem.video, "decode_frames", counting("decode", fluxmem.video.decode_frames))
        patch.setattr(fluxmem.inference, "encode_videos", counting("encode", fluxmem.inference.encode_videos))
        code = main(_args(tiny_model_dir, bench, out, "--memory", ",".join(METHODS), "--budget", "match:fluxmem"))
    assert code == 0
    return {"out": out, "counts": counts, "printed": printed.getvalue()}


def test_split_methods_and_folders():
    assert split_methods("fluxmem, recent:4,evs:rate=0.6,seed=1,random:seed=3") == [
        "fluxmem", "recent:4", "evs:rate=0.6,seed=1", "random:seed=3"]
    assert [method_dir_name(m) for m in ("recent:4", "evs:rate=0.6", "fluxmem-no-tas")] == [
        "recent_4", "evs_rate=0.6", "fluxmem-no-tas"]


def test_every_method_keeps_what_fluxmem_kept(compared):
    out = compared["out"]
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "comparison" and run["memory"] == list(METHODS) and run["budget"] == "match:fluxmem"
    assert run["status"] == "finished"
    by_method = {m: _records(out / method_dir_name(m)) for m in METHODS}
    fluxmem = by_method["fluxmem"]
    answered = [uid for uid, r in fluxmem.items() if not r.get("skipped")]
    assert len(answered) == 4
    for method, records in by_method.items():
        settings = json.loads((out / method_dir_name(method) / "run.json").read_text())["settings"]
        assert settings["budget"] == "match:fluxmem" and settings["method"].split(":")[0] == method.split(":")[0]
        assert set(records) == set(fluxmem)
        for uid in answered:
            record, flux = records[uid], fluxmem[uid]
            assert record["method"].split(":")[0] == method.split(":")[0] and record["budget"] == "match:fluxmem"
            assert record["budget_tokens"] == flux["kept_tokens"] < record["visual_tokens"] == flux["visual_tokens"]
            if method == "recent:4":
                # whole grid steps only: the nearest multiple of one step's cells (ties: fewer)
                cells = record["visual_tokens"] * 2 // record["frames"]
                target = flux["kept_tokens"]
                assert record["kept_tokens"] % cells == 0
                assert abs(record["kept_tokens"] - target) <= cells / 2
            else:  # a rate solved to the exact count
                assert record["kept_tokens"] == flux["kept_tokens"]


def test_each_query_is_decoded_and_encoded_once(compared):
    answered = [r for r in _records(compared["out"] / "fluxmem").values() if not r.get("skipped")]
    calls = sum(r["model_calls"] for r in answered)
    assert calls == 4
    assert compared["counts"] == {"decode": calls, "encode": calls}  # not once per method


def test_each_method_equals_its_run_alone(compared, bench, tiny_model_dir, tmp_path):
    for method in ("evs", "recent:4"):
        alone = tmp_path / method_dir_name(method)
        assert main(_args(tiny_model_dir, bench, alone, "--memory", method, "--budget", "match:fluxmem")) == 0
        assert (alone / "answers.jsonl").exists()  # one method: a plain run directory, as without --memory
        mine = _stable(_records(alone))
        theirs = _stable(_records(compared["out"] / method_dir_name(method)))
        assert mine == theirs


def test_compare_prints_the_run_table_again(compared, capsys):
    out = compared["out"]
    table = (out / "compare.md").read_text()
    assert compared["printed"].startswith(table)
    assert (out / "compare.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    assert capsys.readouterr().out.startswith(table)
    assert (out / "compare.md").read_text() == table
    lines = table.splitlines()
    assert lines[0] == "### StreamingBench: memory methods at budget match:fluxmem"
    overall = [line for line in lines if line.startswith("| **Overall** |")]
    assert [line.split("|")[2].strip() for line in overall] == [f"**{m}**" for m in METHODS]


def test_interrupted_comparison_resumes_per_method(compared, bench, tiny_model_dir, tmp_path):
    from fluxmem.cli import build_parser
    from fluxmem.cli.eval import methods_from_args, settings_from_args

    out = tmp_path / "killed"
    argv = _args(tiny_model_dir, bench, out, "--memory", ",".join(METHODS), "--budget", "match:fluxmem")
    args = build_parser().parse_args(argv)

    class Killed(Exception):
        pass

    seen = []

    def die_mid_question(record):
        seen.append(record["uid"])
        if len(seen) == 6:  # the second question answered by two of the four methods
            raise Killed

    with pytest.raises(Killed):
        run_comparison(settings_from_args(args), methods_from_args(args), on_record=die_mid_question, progress=False)
    lines = {m: len((out / method_dir_name(m) / "answers.jsonl").read_text().splitlines()) for m in METHODS}
    assert lines == {"fluxmem": 2, "recent:4": 2, "evs": 1, "random": 1}
    assert main(argv) == 0
    for method in METHODS:
        folder = out / method_dir_name(method)
        records = gather_records(folder)
        assert len(records) == len((folder / "answers.jsonl").read_text().splitlines())  # nothing twice
        assert _stable(_records(folder)) == _stable(_records(compared["out"] / method_dir_name(method)))
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] == 1 and run["status"] == "finished"


def test_fraction_and_count_budgets(bench, tiny_model_dir, tmp_path):
    for budget in ("0.35", "20"):
        out = tmp_path / budget
        assert main(_args(tiny_model_dir, bench, out, "--limit", "2", "--memory", "evs,random",
                          "--budget", budget, "--seed", "1", fluxmem_flags=False)) == 0
        for method in ("evs", "random"):
            for record in gather_records(out / method):
                if record.get("skipped"):
                    continue
                target = int(record["visual_tokens"] * 0.35) if budget == "0.35" else 20
                assert record["budget_tokens"] == record["kept_tokens"] == target


def test_comparison_errors(bench, tiny_model_dir, compared, tmp_path, capsys):
    assert main(_args(tiny_model_dir, bench, tmp_path / "x", "--memory", "fluxmem,evs", "--no-fluxmem")) == 2
    assert "--no-fluxmem" in capsys.readouterr().err
    assert main(_args(tiny_model_dir, bench, tmp_path / "x", "--memory", "fluxmem,nosuch")) == 2
    err = capsys.readouterr().err
    assert "unknown memory method 'nosuch'" in err and len(err.strip().splitlines()) == 1
    assert main(_args(tiny_model_dir, bench, tmp_path / "x", "--memory", "evs,evs", fluxmem_flags=False)) == 2
    assert "twice" in capsys.readouterr().err
    out = compared["out"]
    assert main(_args(tiny_model_dir, bench, out, "--memory", "fluxmem,evs", "--budget", "match:fluxmem")) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(_args(tiny_model_dir, bench, out, "--memory", "evs", "--budget", "match:fluxmem")) == 2
    assert "comparison" in capsys.readouterr().err  # one run into a comparison's folder
    assert main(_args(tiny_model_dir, bench, tmp_path / "x", "--memory", "evs,random")) == 2
    assert "--short-frames, --medium-frames set FluxMem's memory" in capsys.readouterr().err
    assert main(["compare", str(out / "evs")]) == 2
    assert "not a comparison" in capsys.readouterr().err
    assert main(["score", str(out)]) == 2
    assert "fluxmem compare" in capsys.readouterr().err


def test_visualize_draws_every_method_on_the_same_frames(tiny_model_dir, square_clip, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "pictures"
    methods = ("fluxmem", "recent:2", "evs", "random")
    assert main(["visualize", str(square_clip), "--out", str(out), "--model", str(tiny_model_dir), "--device", "cpu",
                 "--fps", "2", "--max-pixels", "12544", "--short-frames", "2", "--medium-frames", "4",
                 "--memory", ",".join(methods), "--budget", "match:fluxmem", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    numbers = json.loads((out / "methods.json").read_text())["methods"]
    assert [n["method"].split(":")[0] for n in numbers] == [m.split(":")[0] for m in methods]
    flux = numbers[0]
    assert all(n["target"] == flux["kept"] for n in numbers)
    assert numbers[2]["kept"] == numbers[3]["kept"] == flux["kept"]  # evs and random hit the budget exactly
    assert all(sum(n["kept_per_step"]) == n["kept"] for n in numbers)
    assert all(len(n["kept_per_step"]) == len(flux["kept_per_step"]) for n in numbers)  # the same steps
    sheet = Image.open(out / "methods.png")
    assert sheet.width >= 4 * 220  # one column per method
    assert printed.count("[memory] ") == len(methods)


@pytest.mark.parametrize("benchmark", ["streamingbench", "ovobench"])
def test_bootstrap_from_counts_equals_rescoring_every_resample(benchmark, bench, tmp_path):
    """The fast bootstrap (each question scored once, resamples aggregated from per-task counts)
    gives exactly the scores of scoring every resample whole, on known replies."""
    import numpy as np

    from fluxmem.eval import compare
    from fluxmem.eval.benchmark import get_benchmark
    from fluxmem.eval.common import DataIssues
    from fluxmem.eval.runner import RunSettings, load_items
    from fluxmem.eval.synthetic import write_ovobench_fixture

    fx = bench if benchmark == "streamingbench" else write_ovobench_fixture(tmp_path / "ovo")
    settings = RunSettings(benchmark=benchmark, annotations=str(fx["annotations"]), videos=str(fx["videos"]),
                           out=str(tmp_path / "run"), model="scripted")
    items = load_items(settings, DataIssues(log_limit=0))
    rng = np.random.default_rng(3)
    replies = ["A", "B", "1", "2", "Yes", "No", ""]
    answers = {it.uid: {"uid": it.uid, "response": replies[int(rng.integers(len(replies)))]}
               for it in items[1:]}  # the first question has no reply: counted as missing
    draws = rng.integers(0, len(items), size=(40, len(items)))
    target = get_benchmark(benchmark)
    fast = compare._bootstrap(target, items, answers, settings.protocol, draws)
    slow: dict = {}
    for draw in draws:
        scores = compare._score_resample(target, items, answers, settings.protocol, draw)
        if scores.get("overall") is not None:
            slow.setdefault(None, []).append(float(scores["overall"]))
        for task, value in scores["tasks"].items():
            slow.setdefault(task, []).append(float(value))
    assert fast == slow and len(fast[None]) == 40 and len(fast) > 3


def test_runs_recorded_before_memory_methods_still_resume(bench, tmp_path):
    from fluxmem.eval.runner import RunSettings, _fingerprint
    from fluxmem.memory import FluxMemConfig

    for use_fluxmem in (True, False):
        settings = RunSettings(benchmark="streamingbench", annotations=str(bench["annotations"]),
                               videos=str(bench["videos"]), out=str(tmp_path / "run"), model="m",
                               use_fluxmem=use_fluxmem, memory=FluxMemConfig(short_frames=2, medium_frames=4))
        new = settings.record()
        assert new["method"] == ("fluxmem:short_frames=2,medium_frames=4" if use_fluxmem else None)
        old = {k: v for k, v in new.items() if k not in ("method", "budget")}  # a run.json of 0.2
        assert _fingerprint(old) == _fingerprint(new)
        assert _fingerprint(old) != _fingerprint({**new, "method": "evs"})
