"""The lmms-eval plugin: request conversion, the chat model in-process, and a real
``python -m lmms_eval`` run on a local Video-MME-format task (synthetic videos, tiny model, no hub).

The tiny model is steered so that its first reply token is always "B" or "C" (the sign of one
hidden unit decides), which makes the benchmark's own scorer give a known, checkable score.
"""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from fluxmem.errors import ConfigError, InputError, VideoError
from fluxmem.eval.lmms import (
    MODEL_NAME,
    PUBLISHED_MAX_PIXELS,
    cut_at_stop,
    generation_options,
    parse_count,
    to_qwen_messages,
)
from fluxmem.inference import SamplingOptions

SHORT, MEDIUM = 2, 4
SAMPLING = SamplingOptions(fps=2.0, max_frames=16, max_pixels=112 * 112)
MODEL_ARGS = f"short_frames={SHORT},medium_frames={MEDIUM},fps=2,max_frames=16,max_pixels=112*112,device=cpu,dtype=float32"


# ------------------------------------------------------------------ conversion (no lmms-eval)
def test_chat_parts_become_qwen_items_in_order():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use letters."}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "url": "/data/a.mp4"},
                {"type": "text", "text": "Q1"},
                {"type": "video", "url": "/data/b.mp4", "start_time": 3, "end_time": 9.5},
                {"type": "video", "url": {"path": "/data/c.mp4", "video_start": 1.0, "video_end": 2.0}},
                {"type": "image", "url": "/data/x.png"},
            ],
        },
        {"role": "assistant", "content": "A"},
    ]
    options = {"fps": 2.0, "max_frames": 16, "max_pixels": 12544}
    assert to_qwen_messages(messages, SAMPLING) == [
        {"role": "system", "content": "Be brief.\nUse letters."},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "/data/a.mp4", **options},
                {"type": "text", "text": "Q1"},
                {"type": "video", "video": "/data/b.mp4", **options, "video_start": 3.0, "video_end": 9.5},
                {"type": "video", "video": "/data/c.mp4", **options, "video_start": 1.0, "video_end": 2.0},
                {"type": "image", "image": "/data/x.png"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
    ]


def test_system_prompt_is_added_only_when_the_request_has_none():
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert to_qwen_messages([user], SAMPLING, system_prompt="S")[0] == {"role": "system", "content": "S"}
    own = to_qwen_messages([{"role": "system", "content": "mine"}, user], SAMPLING, system_prompt="S")
    assert own[0] == {"role": "system", "content": "mine"} and len(own) == 2


def test_pydantic_chat_messages_are_accepted():
    class Part:
        def __init__(self, **fields):
            self.fields = fields

        def model_dump(self):
            return dict(self.fields)

    message = Part(role="user", content=[Part(type="video", url="/v.mp4"), Part(type="text", text="Q")])
    assert to_qwen_messages([message], SamplingOptions(fps=1.0)) == [
        {"role": "user", "content": [{"type": "video", "video": "/v.mp4", "fps": 1.0}, {"type": "text", "text": "Q"}]}
    ]


@pytest.mark.parametrize(
    "messages, needle",
    [
        ([{"role": "user", "content": [{"type": "audio", "url": "/a.wav"}]}], "audio"),
        ([{"role": "robot", "content": "x"}], "role"),
        ([{"role": "user", "content": [{"type": "video", "url": None}]}], "no video"),
        ([{"role": "user", "content": [{"type": "video", "url": {"start": 1}}]}], "'path'"),
        ([{"role": "user", "content": [{"type": "gif", "url": "x"}]}], "unknown type"),
        ([], "non-empty"),
    ],
)
def test_bad_requests_raise_input_error_naming_the_problem(messages, needle):
    with pytest.raises(InputError, match=needle):
        to_qwen_messages(messages, SAMPLING)


def test_generation_options_follow_lmms_eval_conventions():
    greedy, stops = generation_options({"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": ["\n\n"]})
    assert greedy == {"max_new_tokens": 16, "do_sample": False} and stops == ["\n\n"]
    sampled, stops = generation_options({"temperature": 0.7, "top_p": 0.9, "num_beams": 3, "until": "Q:"})
    assert sampled == {"max_new_tokens": 128, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_beams": 3}
    assert stops == ["Q:"]
    assert generation_options(None, default_max_new_tokens=5) == ({"max_new_tokens": 5, "do_sample": False}, [])
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generation_options({"max_new_tokens": 0})
    with pytest.raises(ConfigError, match="temperature"):
        generation_options({"temperature": -1})


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("B. right\n\nbecause Q: x", ["Q:", "\n\n"]) == "B. right"
    assert cut_at_stop("B", ["\n\n"]) == "B"
    assert cut_at_stop("abc", []) == "abc"


def test_counts_accept_the_products_written_in_recipes():
    assert parse_count("max_pixels", "128*28*28") == PUBLISHED_MAX_PIXELS == 100352
    assert parse_count("max_frames", 1024) == 1024 and parse_count("max_frames", "None") is None
    with pytest.raises(ConfigError, match="whole number"):
        parse_count("max_pixels", "128x28")


def test_entry_point_names_the_manifest():
    points = {ep.name: ep.value for ep in entry_points(group="lmms_eval.models")}
    assert points.get(MODEL_NAME) == "fluxmem.eval.lmms.manifest:MANIFEST"


# ------------------------------------------------------------------ fixtures with the tiny model
def _steer_to_b_or_c(model, processor) -> None:
    """Make every greedy token "B" or "C": only hidden unit 0 survives the final norm, and the
    output head maps its sign to B (+) or C (-)."""
    tokenizer = processor.tokenizer
    b, c = tokenizer.convert_tokens_to_ids("B"), tokenizer.convert_tokens_to_ids("C")
    with torch.no_grad():
        norm = model.model.language_model.norm.weight
        norm.zero_()
        norm[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[b, 0] = 50.0
        model.lm_head.weight[c, 0] = -50.0


@pytest.fixture(scope="module")
def steered_dir(tmp_path_factory):
    from fluxmem.testing import build_tiny_qwen2_5_vl

    path = tmp_path_factory.mktemp("steered-qwen")
    model, processor = build_tiny_qwen2_5_vl()
    _steer_to_b_or_c(model, processor)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """HF_HOME with Video-MME's layout (``videomme/data/<videoID>.mp4``): two synthetic videos."""
    from fluxmem.testing import moving_square_frames, write_video

    root = tmp_path_factory.mktemp("lmms")
    data = root / "hf" / "videomme" / "data"
    data.mkdir(parents=True)
    write_video(data / "vid0.mp4", moving_square_frames(8), fps=2.0)
    write_video(data / "vid1.mp4", moving_square_frames(12, step=56), fps=2.0)
    return root


@pytest.fixture(scope="module")
def direct(steered_dir):
    """The reference path: fluxmem.loading + fluxmem.inference.answer, as `fluxmem ask` runs."""
    from fluxmem.inference import answer
    from fluxmem.loading import load_model
    from fluxmem.memory import FluxMemConfig

    model, processor = load_model(steered_dir, device="cpu", dtype="float32", fluxmem=FluxMemConfig(SHORT, MEDIUM))

    def ask(video, question, max_new_tokens, use_fluxmem=True):
        return answer(model, processor, str(video), question, sampling=SAMPLING, max_new_tokens=max_new_tokens, use_fluxmem=use_fluxmem)

    return ask


@pytest.fixture(scope="module")
def chat_model(steered_dir):
    pytest.importorskip("lmms_eval")
    from fluxmem.eval.lmms.model import FluxMemQwen2_5_VL

    return FluxMemQwen2_5_VL.create_from_arg_string(f"pretrained={steered_dir},{MODEL_ARGS}", {"batch_size": 1})


def _requests(docs, gen_kwargs, task="local"):
    """lmms-eval chat Instances over ``docs`` (the task's dataset is ``{task: {"test": docs}}``)."""
    from lmms_eval.api.instance import Instance

    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": "video", "url": doc["video"]}, {"type": "text", "text": doc["q"]}]}]

    return [
        Instance(
            request_type="generate_until",
            arguments=("ctx", doc_to_messages, dict(gen_kwargs), i, task, "test"),
            idx=0,
            metadata={"task": task, "doc_id": i, "repeats": 1},
        )
        for i in range(len(docs))
    ]


# ------------------------------------------------------------------ the chat model in-process
def test_replies_equal_the_fluxmem_ask_path_in_order(chat_model, direct, workspace):
    data = workspace / "hf" / "videomme" / "data"
    docs = [
        {"video": str(data / "vid0.mp4"), "q": "Where is the square?"},
        {"video": str(data / "vid0.mp4"), "q": "What colour is it?"},
        {"video": str(data / "vid1.mp4"), "q": "Where is the square?"},
    ]
    chat_model.task_dict = {"local": {"test": docs}}
    hits_before = chat_model.video_cache_hits
    results = chat_model.generate_until(_requests(docs, {"max_new_tokens": 6, "temperature": 0, "until": []}))
    assert chat_model.video_cache_hits == hits_before + 1  # the second question reused vid0's frames
    for doc, result in zip(docs, results):
        expected = direct(doc["video"], doc["q"], 6)
        assert result.text == expected.text and set(result.text) <= {"B", "C"} and len(result.text) == 6
        dropped = expected.memory["tokens"] - expected.memory["kept"]
        assert dropped > 0  # FluxMem pruned this video, and the count says so
        assert result.token_counts.input_tokens == expected.prompt_tokens - dropped
        assert result.token_counts.output_tokens == 6


def test_baseline_runs_the_same_path_without_pruning(chat_model, direct, workspace):
    video = str(workspace / "hf" / "videomme" / "data" / "vid1.mp4")
    docs = [{"video": video, "q": "Where is the square?"}]
    chat_model.task_dict = {"local": {"test": docs}}
    chat_model.use_fluxmem = False
    try:
        [result] = chat_model.generate_until(_requests(docs, {"max_new_tokens": 6}))
    finally:
        chat_model.use_fluxmem = True
    expected = direct(video, "Where is the square?", 6, use_fluxmem=False)
    assert result.text == expected.text
    assert result.token_counts.input_tokens == expected.prompt_tokens


def test_until_cuts_the_reply(chat_model, direct, workspace):
    video = str(workspace / "hf" / "videomme" / "data" / "vid1.mp4")
    full = direct(video, "Q", 8).text
    stop = "C" if "C" in full[1:] else "B"
    docs = [{"video": video, "q": "Q"}]
    chat_model.task_dict = {"local": {"test": docs}}
    [result] = chat_model.generate_until(_requests(docs, {"max_new_tokens": 8, "until": [stop]}))
    assert result.text == full[: full.index(stop)]


def test_unreadable_video_gives_an_empty_reply_and_is_counted(chat_model, workspace, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    good = str(workspace / "hf" / "videomme" / "data" / "vid0.mp4")
    docs = [{"video": str(broken), "q": "Q"}, {"video": good, "q": "Q"}]
    chat_model.task_dict = {"local": {"test": docs}}
    failures = len(chat_model.failures)
    results = chat_model.generate_until(_requests(docs, {"max_new_tokens": 2}))
    assert results[0].text == "" and len(results[1].text) == 2
    assert len(chat_model.failures) == failures + 1 and chat_model.failures[-1]["doc_id"] == 0
    chat_model.strict = True
    try:
        with pytest.raises(VideoError):
            chat_model.generate_until(_requests(docs[:1], {"max_new_tokens": 2}))
    finally:
        chat_model.strict = False


def test_unsupported_request_types_say_so(chat_model):
    for method in (chat_model.loglikelihood, chat_model.generate_until_multi_round):
        with pytest.raises(NotImplementedError, match="does not"):
            method([])


def test_bad_model_arguments_fail_before_loading(steered_dir):
    pytest.importorskip("lmms_eval")
    from fluxmem.eval.lmms.model import FluxMemQwen2_5_VL

    with pytest.raises(ConfigError, match="batch_size=2"):
        FluxMemQwen2_5_VL(pretrained=str(steered_dir), batch_size=2)
    with pytest.raises(ConfigError, match="frame_rate"):
        FluxMemQwen2_5_VL(pretrained=str(steered_dir), frame_rate=1)
    with pytest.raises(ConfigError, match="pretrained"):
        FluxMemQwen2_5_VL()
    with pytest.raises(ConfigError, match="short_frames"):
        FluxMemQwen2_5_VL(pretrained=str(steered_dir), short_frames=1)
    with pytest.raises(ConfigError, match="fps"):
        FluxMemQwen2_5_VL(pretrained=str(steered_dir), fps="fast")


# ------------------------------------------------------------------ a real lmms-eval run
GOLD = ["B", "C", "B", "C"]


def _write_local_videomme(workspace) -> Path:
    """A task that includes lmms-eval's own videomme.yaml (prompt, scorer, metric) and reads its
    documents from a local JSON file instead of the hub."""
    import lmms_eval

    tasks = workspace / "tasks"
    tasks.mkdir(exist_ok=True)
    docs = [
        {
            "video_id": f"{i:03d}", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
            "url": "local", "videoID": f"vid{i // 2}", "question_id": f"{i:03d}-1", "task_type": "Counting Problem",
            "question": f"Where is the red square? ({i})", "options": ["A. left", "B. right", "C. top", "D. bottom"],
            "answer": GOLD[i],
        }
        for i in range(4)
    ]
    (tasks / "videomme_local.json").write_text(json.dumps(docs))
    real = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
    (tasks / "videomme_local.yaml").write_text(
        f"include: {real}\ntask: videomme_local\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: videomme_local.json\n"
    )
    return tasks


def test_python_m_lmms_eval_runs_the_plugin_on_a_local_task(steered_dir, workspace, direct):
    pytest.importorskip("lmms_eval")
    tasks = _write_local_videomme(workspace)
    out = workspace / "out"
    env = {**os.environ, "HF_HOME": str(workspace / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "lmms_eval", "--model", MODEL_NAME,
        "--model_args", f"pretrained={steered_dir},{MODEL_ARGS}",
        "--tasks", "videomme_local", "--include_path", str(tasks), "--limit", "4",
        "--gen_kwargs", "max_new_tokens=1", "--batch_size", "1",
        "--output_path", str(out), "--log_samples",
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    [samples_file] = out.glob("*/*_samples_videomme_local.jsonl")
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]
    data = workspace / "hf" / "videomme" / "data"
    for sample in samples:
        expected = direct(data / f"vid{sample['doc_id'] // 2}.mp4", sample["input"], 1)
        assert sample["filtered_resps"] in (expected.text, [expected.text]) and expected.text in ("B", "C")
        dropped = expected.memory["tokens"] - expected.memory["kept"]
        assert dropped > 0 and sample["token_counts"][0]["input_tokens"] == expected.prompt_tokens - dropped
        score = sample["videomme_perception_score"]
        assert score["pred_answer"] == expected.text
        assert score["score"] == float(expected.text == GOLD[sample["doc_id"]])
    correct = sum(s["videomme_perception_score"]["score"] for s in samples)

    [results_file] = out.glob("*/*_results.json")
    results = json.loads(results_file.read_text())["results"]["videomme_local"]
    assert results["videomme_perception_score,none"] == pytest.approx(100 * correct / 4)
    assert "FluxMem kept" in run.stderr  # the plugin's per-run memory summary


# ------------------------------------------------------------------ the published recipes
def _recipe_commands(*args, **env):
    script = Path(__file__).parents[1] / "scripts" / "lmms_eval_recipes.sh"
    run = subprocess.run(
        ["bash", str(script), *args], env={**os.environ, "DRY_RUN": "1", "NUM_PROCESSES": "1", **env},
        capture_output=True, text=True, timeout=60, check=False,
    )
    return run, [line.split() for line in run.stdout.splitlines()]


def test_recipes_script_runs_the_three_published_settings():
    from fluxmem.eval.lmms import PUBLISHED_FPS, PUBLISHED_MAX_FRAMES, PUBLISHED_MEDIUM_FRAMES, PUBLISHED_SHORT_FRAMES

    run, commands = _recipe_commands("all")
    assert run.returncode == 0, run.stderr
    assert [c[c.index("--tasks") + 1] for c in commands] == ["videomme", "mlvu_dev", "longvideobench_val_v"]
    for command in commands:
        assert command[:5] == ["python", "-m", "lmms_eval", "--model", MODEL_NAME]
        args = dict(pair.split("=", 1) for pair in command[command.index("--model_args") + 1].split(","))
        assert args["pretrained"] == "Qwen/Qwen2.5-VL-7B-Instruct" and args["use_fluxmem"] == "True"
        assert int(args["short_frames"]) == PUBLISHED_SHORT_FRAMES == 8
        assert int(args["medium_frames"]) == PUBLISHED_MEDIUM_FRAMES == 512
        assert float(args["fps"]) == PUBLISHED_FPS == 1.0
        assert int(args["max_frames"]) == PUBLISHED_MAX_FRAMES == 1024
        assert int(args["max_pixels"]) == PUBLISHED_MAX_PIXELS
    run, [baseline] = _recipe_commands("--baseline", "videomme", NUM_PROCESSES="4")
    assert baseline[:5] == ["accelerate", "launch", "--num_processes", "4", "-m"]
    assert "use_fluxmem=False" in baseline[baseline.index("--model_args") + 1]
    run, commands = _recipe_commands("videomme_wrong")
    assert run.returncode == 2 and "unknown recipe" in run.stderr and commands == []
