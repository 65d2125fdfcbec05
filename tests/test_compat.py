"""Loud compatibility checks: every assumption about transformers that fails raises one
UnsupportedTransformersError naming the installed version, the tested range and each mismatch."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from conftest import video_tensor

import fluxmem
from fluxmem import FluxMemConfig, UnsupportedTransformersError
from fluxmem.adapters import hf
from fluxmem.loading import load_model
from fluxmem.session import StreamSession
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames

RANGE = re.escape(">=5.19,<6")


def _model():
    return build_tiny_qwen2_5_vl(seed=0)


def _installed() -> str:
    return re.escape(f"installed transformers {hf.installed_version()}")


def test_the_tested_range_is_the_one_pyproject_admits():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"transformers\b", d)]
    assert pins and pins[0].replace(" ", "").endswith(hf.TESTED_RANGE), pins
    assert hf.version_in_range("5.19.0") and hf.version_in_range("5.24.0") and hf.version_in_range("5.99.1")
    assert not hf.version_in_range("5.18.2") and not hf.version_in_range("6.0.0") and not hf.version_in_range("4.57.0")


def test_forward_without_a_cache_argument_is_refused_by_enable():
    model, _ = _model()
    official = type(model)

    class NoCache(official):
        def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)

    model.__class__ = NoCache
    with pytest.raises(UnsupportedTransformersError) as error:
        fluxmem.enable(model)
    message = str(error.value)
    assert re.search(_installed(), message) and re.search(RANGE, message)
    assert "NoCache.forward takes no key/value cache argument (looked for cache or past_key_values)" in message
    assert fluxmem.get_state(model) is None


def test_every_mismatch_is_named_together(monkeypatch):
    model, _ = _model()
    official = type(model)

    class NoCache(official):
        def forward(self, input_ids=None, **kwargs):
            return super().forward(input_ids=input_ids)

    model.__class__ = NoCache
    monkeypatch.setattr(hf, "installed_version", lambda: "6.1.0")
    with pytest.raises(UnsupportedTransformersError) as error:
        fluxmem.enable(model)
    message = str(error.value)
    assert "transformers 6.1.0 is outside the tested range >=5.19,<6" in message
    assert "NoCache.forward takes no key/value cache argument" in message
    assert "pip install 'transformers>=5.19,<6'" in message


def test_a_version_outside_the_range_is_refused_by_load_model(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(hf, "installed_version", lambda: "5.12.0")
    with pytest.raises(UnsupportedTransformersError, match=r"installed transformers 5\.12\.0 \(tested: transformers>=5\.19,<6\)"):
        load_model(tiny_model_dir, device="cpu")


def test_positions_probe_fires_when_the_rope_index_numbers_text_differently():
    model, _ = _model()
    core_class = type(model.model)

    class ShiftedRope(core_class):
        def get_rope_index(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                           second_per_grid_ts=None, attention_mask=None, **kwargs):  # fmt: skip
            positions, deltas = super().get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw,
                                                       second_per_grid_ts, attention_mask, **kwargs)  # fmt: skip
            return positions + 1, deltas

    model.model.__class__ = ShiftedRope
    with pytest.raises(UnsupportedTransformersError, match=r"get_rope_index numbers two text tokens \[\[\[1, 2\]\]"):
        fluxmem.enable(model)


def test_cache_growth_probe_fires_when_the_text_model_ignores_the_cache():
    model, _ = _model()
    language_class = type(model.model.language_model)
    name = hf.cache_argument(model.model.language_model)

    class Forgetful(language_class):
        def forward(self, *args, **kwargs):
            kwargs[name] = None  # runs without the caller's cache, as a renamed argument would
            return super().forward(*args, **kwargs)

    Forgetful.forward.__signature__ = hf.inspect.signature(language_class.forward)
    model.model.language_model.__class__ = Forgetful
    with pytest.raises(UnsupportedTransformersError,
                       match=rf"a two-token prefill left 0 tokens in the cache passed as {name}="):  # fmt: skip
        fluxmem.enable(model)


def test_stream_session_runs_the_same_checks(monkeypatch):
    model, processor = _model()
    monkeypatch.setattr(hf, "installed_version", lambda: "4.57.3")
    with pytest.raises(UnsupportedTransformersError, match=r"the streaming session does not work with the installed "
                                                           r"transformers 4\.57\.3"):  # fmt: skip
        StreamSession(model, processor)


def test_decoding_on_a_cache_the_pruned_prefill_did_not_fill_raises():
    model, processor = _model()
    fluxmem.enable(model, FluxMemConfig(short_frames=4, medium_frames=4))
    frames = moving_square_frames(16, height=112, width=224, step=56)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": "What?"}]}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    inputs = processor(text=[text], videos=[video_tensor(frames)], return_tensors="pt", do_sample_frames=False, fps=2.0)
    name = hf.cache_argument(model)

    def swap_cache(module, args, kwargs):  # a generate that hands decoding steps another cache object
        cache = kwargs.get(name)
        if cache is not None and cache.get_seq_length() > 0:
            kwargs[name] = copy.deepcopy(cache)
        return args, kwargs

    handle = model.register_forward_pre_hook(swap_cache, with_kwargs=True, prepend=True)
    try:
        with pytest.raises(UnsupportedTransformersError) as error, torch.inference_mode():
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
    finally:
        handle.remove()
    message = str(error.value)
    assert f"a decoding step after a pruned prefill received a cache ({name}=) that the prefill did not fill" in message
    assert re.search(RANGE, message)
    # the same model decodes normally when generate keeps its cache
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
