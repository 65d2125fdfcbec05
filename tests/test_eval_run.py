"""Benchmark runners: clip windows, answers files, resume, scoring of whole runs.

The first half drives :func:`run_benchmark` with a scripted answerer (replies chosen per question,
so that every score is known by hand); the second half runs the real commands on the tiny model
over the synthetic fixtures of :mod:`fluxmem.eval.synthetic`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fluxmem.cli import main
from fluxmem.errors import ConfigError
from fluxmem.eval import DataIssues, load_ovobench, load_streamingbench
from fluxmem.eval.runner import (
    VOLATILE_FIELDS,
    DistEnv,
    Reply,
    RunSettings,
    balanced_subset,
    gather_records,
    run_benchmark,
    score_run,
)
from fluxmem.eval.synthetic import write_ovobench_fixture, write_streamingbench_fixture


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {"sb": write_streamingbench_fixture(root / "sb"), "ovo": write_ovobench_fixture(root / "ovo")}


def _settings(fx, benchmark, out, **kw):
    return RunSettings(benchmark=benchmark, annotations=str(fx["annotations"]), videos=str(fx["videos"]),
                       out=str(out), model="scripted", **kw)


class Scripted:
    """An answerer that replies from a table keyed by (prompt, clip end) and logs every call."""

    def __init__(self, reply):
        self.reply, self.calls, self.plans = reply, [], []

    def __call__(self, video: Path, start: float, end: float, prompt: str, **planned) -> Reply:
        self.calls.append((video.parent.name + "/" + video.name, start, end, prompt))
        self.plans.append(planned)
        return Reply(text=self.reply(prompt, start, end))


# ------------------------------------------------------------------------ scripted StreamingBench


def _sb_script(items):
    by_prompt = {i.prompt: i for i in items if i.kind != "proactive"}
    po = next(i for i in items if i.kind == "proactive")
    special = {  # task -> reply given the gold letter
        "Attribute Perception": lambda g: " " + g,  # official wrong (first char), robust right
        "Counting": lambda g: "D" if g != "D" else "A",  # wrong everywhere
        "Spatial Understanding": lambda g: g.lower(),  # official wrong, robust right
    }

    def reply(prompt, start, end):
        if prompt == po.prompt:
            return "yes" if end >= 43 else "no"
        if prompt == po.meta["final_prompt"]:
            return "The square is at the right edge now."
        item = by_prompt[prompt]
        if item.kind == "sqa" and item.meta["history"] == 0:
            return ""  # official: left out of the count; robust: wrong
        return special.get(item.task, lambda g: g)(item.gold)

    return reply


def test_streamingbench_run_known_scores_and_windows(fixtures, tmp_path):
    fx = fixtures["sb"]
    items = load_streamingbench(fx["annotations"], context=60, issues=DataIssues(log_limit=0))
    script = Scripted(_sb_script(items))
    result = run_benchmark(_settings(fx, "streamingbench", tmp_path / "run", context=60.0),
                           answerer=script, progress=False)
    s = result.scores
    # official: first character; RTVU micro over 7 answered questions, 4 right
    assert s["tasks"]["Object Perception"] == 100.0
    assert s["tasks"]["Attribute Perception"] == 0.0 and s["robust"]["tasks"]["Attribute Perception"] == 100.0
    assert s["tasks"]["Spatial Understanding"] == 0.0 and s["robust"]["tasks"]["Spatial Understanding"] == 100.0
    assert s["tasks"]["Counting"] == 0.0 and s["robust"]["tasks"]["Counting"] == 0.0
    # the truncated video's question is answered here: the scripted answerer decodes nothing
    assert s["categories"]["Real-Time Visual Understanding"] == 500 / 8
    assert s["robust"]["categories"]["Real-Time Visual Understanding"] == 700 / 8
    # Sequential QA: the empty first reply is left out officially, wrong in the robust column
    assert s["counted"]["tasks"]["Sequential Question Answering"] == 2
    assert s["tasks"]["Sequential Question Answering"] == 100.0
    assert s["robust"]["tasks"]["Sequential Question Answering"] == 200 / 3
    assert s["tasks"]["Proactive Output"] == 100.0
    ctx_robust = (250 * 200 / 3 + 51 * 100) / 301
    assert s["robust"]["categories"]["Contextual Understanding"] == ctx_robust
    assert s["overall"] == (2500 * 500 / 8 + 801 * 100) / 3301
    assert s["skipped"] == {"bad_timestamp": 1, "missing_video": 1, "sqa_empty_reply": 1}
    assert s["data"]["run"] == {"warnings": {"past_end_clamped": 1}, "skipped": {"missing_video": 1}}
    assert s["answers"] == {"questions": 13, "answered": 12, "skipped": 1, "missing": 0}
    assert s["task_abbreviations"]["Object Perception"] == "OP"

    calls = {(c[0], c[1], c[2]) for c in script.calls}
    assert ("sample_1/video.mp4", 0.0, 30.0) in calls  # asked at 30 s: [max(0, 30-60), 30]
    assert ("sample_1/video.mp4", 10.0, 70.0) in calls
    assert ("sample_1/video.mp4", 120.0, 180.0) in calls  # asked at 210 s of a 180 s video: clamped
    assert ("sample_2/video.mp4", 30.0, 90.0) in calls  # Sequential QA at 01:30
    po_item = next(i for i in items if i.kind == "proactive")
    polls = [(c[1], c[2]) for c in script.calls if c[3] == po_item.prompt]
    assert polls == [(40.0, 41.0), (40.0, 42.0), (40.0, 43.0)]  # [t, now] once a second until "yes"
    assert [(c[1], c[2]) for c in script.calls if c[3] == po_item.meta["final_prompt"]] == [(40.0, 43.0)]
    assert len(script.calls) == 12 - 1 + 4  # one call per question, the proactive item: 3 polls + 1

    records = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in records] == [i.uid for i in items]  # one record each, in question order
    su = next(r for r in records if r["task"] == "Spatial Understanding")
    assert su["clip"] == [120.0, 180.0] and su["warnings"] == ["past_end_clamped"]
    # the published chain is case-insensitive: "b" reads B
    assert su["extracted"] == {"official": su["gold"].lower(), "robust": su["gold"], "published": su["gold"]}
    assert su["correct"] == {"official": False, "robust": True, "published": True}
    assert s["published"]["tasks"]["Spatial Understanding"] == 100.0
    po = next(r for r in records if r["kind"] == "proactive")
    assert po["extracted"]["t_yes"] == 43.0 and po["model_calls"] == 4
    assert [t["content"] for t in po["response"] if t["role"] == "assistant"] == [
        "no", "no", "yes", "The square is at the right edge now."]
    missing = next(r for r in records if r["task"] == "Event Understanding")
    assert missing["skipped"] == "missing_video" and missing["response"] is None
    for r in records:
        assert r["prompt"] and "eval_item" in r
        if not r.get("skipped"):
            assert r["latency_ms"] >= 0 and r["peak_memory_mb"] > 0


def test_streamingbench_past_end_skip_and_whole_past(fixtures, tmp_path):
    fx = fixtures["sb"]
    script = Scripted(lambda p, s, e: "A")
    result = run_benchmark(_settings(fx, "streamingbench", tmp_path / "run", context=0, past_end="skip",
                                     tasks=("Real-Time Visual Understanding",)), answerer=script, progress=False)
    assert result.scores["skipped"]["past_end"] == 1
    assert result.scores["answers"]["questions"] == 9
    assert {(c[1], c[2]) for c in script.calls} >= {(0.0, 70.0), (0.0, 150.0)}  # context None: all the past


# ------------------------------------------------------------------------------ scripted OVO-Bench


def _ovo_script(items):
    by_key = {(i.prompt, i.clip_end): i for i in items}
    replies = {"ASI": "C", "HLD": "Could be D"}  # HLD: "C" of "Could" counts under the lenient rule
    probes = {("REC", 0): "1", ("REC", 1): "2 times", ("REC", 2): "I count 1 and 2",
              ("SSR", 0): "Yes", ("SSR", 1): "yes", ("CRR", 0): "No.", ("CRR", 1): "Y"}

    def reply(prompt, start, end):
        item = by_key.get((prompt, end)) or next(i for i in items if i.prompt == prompt)
        if item.kind == "mcq":
            return replies.get(item.task, item.gold)
        return probes[(item.task, item.meta["probe"])]

    return reply


def test_ovobench_run_known_scores_and_windows(fixtures, tmp_path):
    fx = fixtures["ovo"]
    items = load_ovobench(fx["annotations"])
    script = Scripted(_ovo_script(items))
    result = run_benchmark(_settings(fx, "ovobench", tmp_path / "run"), answerer=script, progress=False)
    s, r = result.scores, result.scores["robust"]
    assert s["tasks"]["EPM"] == 100.0 and s["tasks"]["ASI"] == 0.0
    assert s["tasks"]["HLD"] == 100.0 and r["tasks"]["HLD"] == 0.0  # lenient substring quirk
    assert s["categories"]["realtime"] == 100.0 and s["counted"]["tasks"]["STU"] == 2
    assert s["tasks"]["REC"] == 200 / 3 and r["tasks"]["REC"] == 200 / 3
    assert s["tasks"]["SSR"] == 50.0 and s["tasks"]["CRR"] == 100.0 and r["tasks"]["CRR"] == 100.0
    forward = (200 / 3 + 50 + 100) / 3
    assert s["categories"]["forward"] == forward
    assert s["overall"] == (200 / 3 + 100 + forward) / 3
    assert r["overall"] == (100 / 3 + 100 + forward) / 3
    assert s["skipped"] == {"missing_video": 1, "unreadable_video": 1}
    calls = {(c[0], c[1], c[2]) for c in script.calls}
    assert ("videos/a.mp4", 0.0, 46.0) in calls  # OJR asked at 45.2 s sees [0, ceil(45.2)]
    assert ("videos/b.mp4", 0.0, 90.0) in calls  # asked at 120 s of a 90 s video: clamped
    assert ("videos/a.mp4", 0.0, 61.0) in calls  # REC probe at 60.5 s
    assert len(script.calls) == 17


def test_ovobench_context_caps_the_window(fixtures, tmp_path):
    fx = fixtures["ovo"]
    script = Scripted(lambda p, s, e: "A")
    run_benchmark(_settings(fx, "ovobench", tmp_path / "run", context=20.0, tasks=("OJR", "ACR")),
                  answerer=script, progress=False)
    assert sorted((c[1], c[2]) for c in script.calls) == [(0.0, 10.0), (26.0, 46.0)]


# ------------------------------------------------------------------------------ helpers


def test_balanced_subset_round_robin_across_tasks(fixtures):
    items = load_ovobench(fixtures["ovo"]["annotations"])
    picked = balanced_subset(items, 13)
    tasks = [i.task for i in picked]
    assert sorted(set(tasks)) == sorted({i.task for i in items})  # all 12 tasks present
    assert tasks.count("STU") == 2 and len(picked) == 13  # the 13th is the second of the first task
    assert [i.uid for i in picked] == [i.uid for i in items if i in picked]  # original order kept
    assert balanced_subset(items, 100) == items


def test_runs_see_the_planned_frames_and_record_the_protocol(fixtures, tmp_path):
    fx = fixtures["sb"]
    script = Scripted(lambda p, s, e: "A")
    run_benchmark(_settings(fx, "streamingbench", tmp_path / "run", tasks=("OP",)), answerer=script, progress=False)
    (plan,) = script.plans  # OP asked at 30 s of a 1 fps video: our protocol sees 0 … 30 s, padded to 32
    assert plan["frames"].times == [float(k) for k in range(31)] + [30.0]
    assert plan["frames"].second_per_grid_ts == [2.0] and plan["max_pixels"] == 401408
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["protocol"] == "fluxmem"
    assert run["settings"]["protocol_settings"]["context"] == 256.0
    assert run["settings"]["protocol_settings"]["repetition_penalty"] == 1.05
    # the published rule: 31 frames in [0, 30] s -> 30 (rounded down to even, the oldest dropped),
    # and the spacing reported as 31/30 s
    script = Scripted(lambda p, s, e: "A")
    run_benchmark(_settings(fx, "streamingbench", tmp_path / "pub", tasks=("OP",), protocol="published"),
                  answerer=script, progress=False)
    (plan,) = script.plans
    assert plan["frames"].times == [float(k) for k in range(1, 31)]
    assert plan["frames"].second_per_grid_ts == [2 / (30 / 31)]
    assert plan["min_pixels"] == 12544 and plan["max_pixels"] == 401408
    run = json.loads((tmp_path / "pub" / "run.json").read_text())
    assert run["settings"]["protocol"] == "published" and run["settings"]["protocol_settings"]["min_frames"] == 2
    with pytest.raises(ConfigError, match="(?i)other settings.*protocol"):
        run_benchmark(_settings(fx, "streamingbench", tmp_path / "pub", tasks=("OP",)), answerer=script,
                      progress=False)


def test_dist_env():
    assert DistEnv.from_env({}) == DistEnv(0, 1, 0)
    env = DistEnv.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert env.answers_file == "answers.rank1.jsonl" and DistEnv().answers_file == "answers.jsonl"
    with pytest.raises(ConfigError, match="RANK=2"):
        DistEnv.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_settings_validation(fixtures, tmp_path):
    fx = fixtures["sb"]
    with pytest.raises(ConfigError, match="--limit"):
        _settings(fx, "streamingbench", tmp_path, limit=0)
    with pytest.raises(ConfigError, match="past-end"):
        _settings(fx, "streamingbench", tmp_path, past_end="ignore")
    with pytest.raises(Exception, match="--videos"):
        RunSettings(benchmark="ovobench", annotations=str(fx["annotations"]), videos=str(tmp_path / "nope"),
                    out=str(tmp_path))


# ------------------------------------------------------------------------------ the tiny model


def _cli_args(model_dir, fx, out, *extra):
    return ["--annotations", str(fx["annotations"]), "--videos", str(fx["videos"]), "--out", str(out),
            "--model", str(model_dir), "--device", "cpu", "--fps", "0.5", "--max-frames", "8",
            "--max-pixels", "12544", "--short-frames", "2", "--medium-frames", "4",
            "--max-new-tokens", "4", "--no-progress", *extra]


def _stable(records):
    """Records without timings and memory (and the proactive dialog's per-turn cost)."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE_FIELDS}
        if isinstance(r.get("response"), list):
            r["response"] = [{k: v for k, v in t.items() if k != "cost"} for t in r["response"]]
        out.append(r)
    return out


def _scores_core(scores):
    return {k: scores[k] for k in ("tasks", "categories", "overall", "counted", "skipped", "robust", "data",
                                   "answers")}


@pytest.fixture(scope="module")
def sb_runs(fixtures, tiny_model_dir, tmp_path_factory):
    """StreamingBench with FluxMem and as the baseline, through the command line."""
    root = tmp_path_factory.mktemp("sb-runs")
    for name, extra in (("fluxmem", ()), ("baseline", ("--no-fluxmem",))):
        assert main(["eval", "streamingbench", *_cli_args(tiny_model_dir, fixtures["sb"], root / name, *extra)]) == 0
    return root


def test_streamingbench_command_fluxmem_and_baseline(sb_runs, capsys):
    for name in ("fluxmem", "baseline"):
        out = sb_runs / name
        assert {p.name for p in out.iterdir()} == {"answers.jsonl", "items.jsonl", "run.json", "scores.json",
                                                   "scores.md"}
        records = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
        assert len(records) == len({r["uid"] for r in records}) == 13
        answered = [r for r in records if not r.get("skipped")]
        assert {r["skipped"] for r in records if r.get("skipped")} == {"missing_video", "video_decode_error"}
        assert len(answered) == 11 and all(isinstance(r["correct"]["robust"], bool) for r in answered)
        run = json.loads((out / "run.json").read_text())
        assert run["status"] == "finished" and run["versions"]["fluxmem"]
        settings = run["settings"]
        assert settings["use_fluxmem"] is (name == "fluxmem") and settings["protocol"] == "fluxmem"
        assert settings["protocol_settings"]["max_pixels"] == 12544
        assert settings["protocol_settings"]["context"] == 256.0
        assert settings["protocol_settings"]["overrides"] == ["fps", "max_frames", "max_new_tokens", "max_pixels"]
        assert run["data_issues"]["skipped"] == {"bad_timestamp": 1}
        scores = json.loads((out / "scores.json").read_text())
        assert set(scores) >= {"tasks", "categories", "overall", "counted", "skipped", "robust"}
        assert scores["counted"]["overall"] + scores["skipped"].get("sqa_empty_reply", 0) == 11
        md = (out / "scores.md").read_text()
        assert "| **Overall** |" in md and "official | robust" in md
        if name == "fluxmem":
            assert sum(r["kept_tokens"] for r in answered) < sum(r["visual_tokens"] for r in answered)
            assert settings["memory"]["short_frames"] == 2
        else:
            assert all(r["visual_tokens"] == 0 for r in answered) and settings["memory"] is None
    base = json.loads((sb_runs / "baseline" / "answers.jsonl").read_text().splitlines()[1])
    flux = json.loads((sb_runs / "fluxmem" / "answers.jsonl").read_text().splitlines()[1])
    assert base["prompt_tokens"] == flux["prompt_tokens"] > 0  # same frames, pruned only with FluxMem


def test_score_dir_recomputes_the_run(sb_runs, tmp_path, capsys):
    out = sb_runs / "fluxmem"
    before = (out / "scores.json").read_text()
    capsys.readouterr()
    assert main(["score", str(out)]) == 0
    assert (out / "scores.json").read_text() == before
    printed = capsys.readouterr().out
    assert printed.startswith((out / "scores.md").read_text())
    # the answers file alone (no run.json, no items.jsonl): the same accuracies
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "answers.jsonl", alone / "answers.jsonl")
    scores, _ = score_run(alone)
    ref = json.loads(before)
    for key in ("tasks", "categories", "overall", "counted"):
        assert scores[key] == ref[key]
    assert scores["skipped"] == {k: v for k, v in ref["skipped"].items() if k != "bad_timestamp"}


def test_interrupted_run_resumes_to_the_same_table(sb_runs, fixtures, tiny_model_dir, tmp_path):
    from fluxmem.cli import build_parser
    from fluxmem.cli.eval import settings_from_args

    out = tmp_path / "killed"
    args = build_parser().parse_args(["eval", "streamingbench", *_cli_args(tiny_model_dir, fixtures["sb"], out)])
    settings = settings_from_args(args)

    class Killed(Exception):
        pass

    seen = []

    def die_after_five(record):
        seen.append(record["uid"])
        if len(seen) == 5:
            raise Killed

    with pytest.raises(Killed):
        run_benchmark(settings, on_record=die_after_five, progress=False)
    assert len((out / "answers.jsonl").read_text().splitlines()) == 5
    assert not (out / "scores.json").exists()
    with open(out / "answers.jsonl", "ab") as f:  # the kill tore the next line half-way
        f.write(b'{"uid": "half a rec')
    assert main(["eval", "streamingbench", *_cli_args(tiny_model_dir, fixtures["sb"], out)]) == 0
    records = gather_records(out)
    assert len(records) == 13 and len((out / "answers.jsonl").read_text().splitlines()) == 13
    reference = sb_runs / "fluxmem"
    assert _stable(records) == _stable(gather_records(reference))
    assert _scores_core(json.loads((out / "scores.json").read_text())) == _scores_core(
        json.loads((reference / "scores.json").read_text()))
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] == 1 and run["status"] == "finished"
    # a finished run reruns as a no-op
    assert main(["eval", "streamingbench", *_cli_args(tiny_model_dir, fixtures["sb"], out)]) == 0
    assert len(gather_records(out)) == 13


def test_resume_refuses_other_settings(sb_runs, fixtures, tiny_model_dir, capsys):
    out = sb_runs / "fluxmem"
    args = _cli_args(tiny_model_dir, fixtures["sb"], out)
    args[args.index("--short-frames") + 1] = "4"
    assert main(["eval", "streamingbench", *args]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "short_frames" in err and "new --out" in err


def test_ovobench_command_fluxmem_and_baseline(fixtures, tiny_model_dir, tmp_path, capsys):
    for name, extra in (("fluxmem", ()), ("baseline", ("--no-fluxmem",))):
        out = tmp_path / name
        assert main(["eval", "ovobench", *_cli_args(tiny_model_dir, fixtures["ovo"], out, *extra)]) == 0
        printed = capsys.readouterr().out
        assert "### OVO-Bench" in printed and "Forward Active Responding" in printed
        scores = json.loads((out / "scores.json").read_text())
        assert set(scores["tasks"]) == {"EPM", "ASI", "HLD", "STU", "OJR", "ATR", "ACR", "OCR", "FPD",
                                        "REC", "SSR", "CRR"}
        assert set(scores["categories"]) == {"backward", "realtime", "forward"}
        assert scores["counted"]["tasks"]["REC"] == 3
        assert scores["skipped"] == {"missing_video": 1, "unreadable_video": 1}
        assert scores["data"]["run"]["warnings"] == {"past_end_clamped": 1}
        assert scores["run"]["use_fluxmem"] is (name == "fluxmem")


def test_a_new_benchmark_is_one_registered_class(fixtures, tmp_path, monkeypatch):
    """The runner knows nothing benchmark-specific: a toy benchmark registered here runs and is
    scored through the same code."""
    import fluxmem.eval.benchmark as registry
    from fluxmem.eval.benchmark import Benchmark, get_benchmark, register

    registry.benchmark_names()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # forgotten after the test
    from fluxmem.eval.common import EvalItem, ScoreTable
    from fluxmem.eval.protocol import Protocol

    @register
    class ToyBench(Benchmark):
        name, title = "toybench", "Toy"

        def protocol(self, name):
            return Protocol(name=name, benchmark=self.name, prompts="official", frames="end_anchored",
                            context=10.0, max_frames=4)

        def load(self, annotations, protocol, *, tasks=None, issues=None, video_prefix=""):
            rows = json.loads(Path(annotations).read_text())
            return [EvalItem(benchmark=self.name, uid=str(k), task="count", category="all", video=r["video"],
                             query_time=r["t"], clip_start=max(0.0, r["t"] - protocol.context), clip_end=r["t"],
                             prompt=f"How many? ({k})", kind="rec", gold=r["gold"]) for k, r in enumerate(rows)]

        def verdict(self, item, response):
            return {"official": response.strip() == str(item.gold)}

        def score(self, items, answers, issues=None, protocol=None):
            right = sum(bool(a.get("correct", {}).get("official")) for a in answers.values())
            return {"overall": 100.0 * right / len(items), "columns": ["official"]}

        def table(self, scores):
            table = ScoreTable(title=self.title, columns=("official",))
            table.add("Overall", "overall", {"official": scores["overall"]})
            return table

    assert get_benchmark("toybench").title == "Toy"
    ann = tmp_path / "toy.json"
    ann.write_text(json.dumps([{"video": "a.mp4", "t": 30, "gold": 3}, {"video": "a.mp4", "t": 60, "gold": 4}]))
    script = Scripted(lambda p, s, e: "3")
    settings = RunSettings(benchmark="toybench", annotations=str(ann), videos=str(fixtures["ovo"]["videos"]),
                           out=str(tmp_path / "run"), model="scripted")
    result = run_benchmark(settings, answerer=script, progress=False)
    assert result.scores["overall"] == 50.0 and "| **Overall** |  | **50.00** |" in result.table.to_markdown()
    assert [(c[1], c[2]) for c in script.calls] == [(20.0, 30.0), (50.0, 60.0)]
    assert [len(p["frames"].indices) for p in script.plans] == [4, 4]  # the protocol's max_frames


def test_model_answerer_hands_the_plan_and_generation_to_inference(monkeypatch, fixtures):
    """Exactly the planned frames, at the planned rate, with the protocol's generation settings."""
    from fluxmem import inference
    from fluxmem.eval.protocol import published_frames, resolve_protocol
    from fluxmem.eval.runner import ModelAnswerer

    seen = {}

    def fake_prepare(model, processor, video, question, *, sampling):
        seen.update(video=video, sampling=sampling)
        return "prepared"

    def fake_generate(model, processor, prepared, *, max_new_tokens, use_fluxmem, memory, budget, **generate):
        seen.update(prepared=prepared, max_new_tokens=max_new_tokens, memory=memory, budget=budget, generate=generate)
        return inference.Answer(text="B", token_ids=[1], prompt_tokens=7)

    monkeypatch.setattr(inference, "prepare_question", fake_prepare)
    monkeypatch.setattr(inference, "generate_answer", fake_generate)
    protocol = resolve_protocol("published", "streamingbench")
    plan = published_frames(180, 1.0, 0.0, 9, min_frames=2)  # 10 native frames in [0, 9] s: all 10
    answerer = ModelAnswerer(object(), object(), protocol, use_fluxmem=False)
    reply = answerer(fixtures["ovo"]["videos"] / "a.mp4", 0.0, 9.0, "q", frames=plan, min_pixels=12544,
                     max_pixels=401408)
    assert reply.text == "B" and reply.frames == len(plan.indices) == 10
    assert seen["video"].shape[0] == 10 and seen["video"].shape[-1] == 3  # [T, H, W, 3] decoded frames
    assert seen["sampling"].fps == plan.sample_fps and seen["sampling"].min_pixels == 12544
    assert seen["max_new_tokens"] == 128 and seen["prepared"] == "prepared"
    assert seen["memory"] is None and seen["budget"] is None  # the model's own memory
    assert seen["generate"] == {"do_sample": False, "repetition_penalty": 1.05, "positions": "original"}
