"""One tiny model per family (Qwen2.5-VL included) for a whole test run, with the FluxMem switch
installed so that ``generate(use_fluxmem=True)`` gives the offline answer a session is compared to
(the memory settings travel with each call: ``session.offline_generate_options()``)."""

import fluxmem
from fluxmem.testing import build_tiny_qwen2_5_vl
from fluxmem.testing_families import FAMILIES, build_tiny

ALL_FAMILIES = ("qwen2_5_vl", *FAMILIES)
_MODELS: dict = {}


def tiny(family):
    """``(model, processor)`` of ``family``, built once."""
    if family not in _MODELS:
        model, processor = build_tiny_qwen2_5_vl() if family == "qwen2_5_vl" else build_tiny(family)
        fluxmem.enable(model)
        _MODELS[family] = (model, processor)
    return _MODELS[family]
