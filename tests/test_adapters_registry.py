"""Which models fluxmem serves: every Qwen vision-language family's adapter is registered, and an
unsupported model gets one clear message that lists the supported families."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fluxmem.adapters import registry
from fluxmem.errors import UnsupportedModelError

FAMILIES = ["Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL", "Qwen3-VL-MoE", "Qwen3.5", "Qwen3.5-MoE"]


def test_every_family_is_registered_by_model_type():
    assert registry.supported_families() == sorted(FAMILIES)
    assert registry.known_model_types() >= {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"}


@pytest.mark.parametrize("model_type", ["qwen2", "qwen4_exp", "llava", None])
def test_unsupported_model_lists_the_supported_families(model_type):
    model = SimpleNamespace(config=SimpleNamespace(model_type=model_type), model=object())
    with pytest.raises(UnsupportedModelError) as error:
        registry.adapter_for(model)
    message = str(error.value)
    assert "SimpleNamespace" in message and repr(model_type) in message
    for family in FAMILIES:
        assert family in message


def test_a_text_only_qwen_model_is_refused():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="Qwen2ForCausalLM .*Qwen3.5"):
        registry.adapter_for(Qwen2ForCausalLM(config))
