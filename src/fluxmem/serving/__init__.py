"""FluxMem inside vLLM, as a plugin (no fork): content-adaptive video-token memory at serving time.

Installed with the ``vllm`` extra, vLLM finds :func:`register` through the
``vllm.general_plugins`` entry point in every process it starts. It overrides the architectures
below with subclasses of vLLM's own classes; a model served WITHOUT
``hf_overrides={"fluxmem": {...}}`` behaves exactly as stock vLLM. With it, the multimodal
processor encodes each video with the family's transformers vision tower, runs FluxMem on it,
and hands the engine the kept tokens only (``docs/serving.md``).

Importing this package does not import vLLM; only :func:`register` (called by vLLM) does.
"""

from __future__ import annotations

import importlib.util

from ..errors import UnsupportedModelError
from .client import StreamClient
from .settings import ServingSettings

VLLM_TESTED = ">=0.32.0,<0.33"
"""The vLLM releases the plugin is tested with (checked at plugin load)."""

ARCHITECTURES = {
    # architecture -> (vLLM module that must exist, our class)
    "Qwen2_5_VLForConditionalGeneration": (
        "vllm.model_executor.models.qwen2_5_vl",
        "fluxmem.serving.qwen2_5_vl:FluxMemQwen2_5_VLForConditionalGeneration",
    ),
    "Qwen2VLForConditionalGeneration": (
        "vllm.model_executor.models.qwen2_vl",
        "fluxmem.serving.qwen2_vl:FluxMemQwen2VLForConditionalGeneration",
    ),
    "Qwen3VLForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_vl",
        "fluxmem.serving.qwen3_vl:FluxMemQwen3VLForConditionalGeneration",
    ),
    "Qwen3VLMoeForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_vl_moe",
        "fluxmem.serving.qwen3_vl:FluxMemQwen3VLMoeForConditionalGeneration",
    ),
    "Qwen3_5ForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_5",
        "fluxmem.serving.qwen3_vl:FluxMemQwen3_5ForConditionalGeneration",
    ),
    "Qwen3_5MoeForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_5",
        "fluxmem.serving.qwen3_vl:FluxMemQwen3_5MoeForConditionalGeneration",
    ),
}


class UnsupportedVLLMError(UnsupportedModelError):
    """The installed vLLM is outside the range the plugin is tested with."""


def check_vllm_version(version: str | None = None) -> str:
    """The installed vLLM version; :class:`UnsupportedVLLMError` outside :data:`VLLM_TESTED`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    if version is None:
        import vllm

        version = vllm.__version__
    base = Version(version).base_version  # "0.32.0+cpu" and "0.32.0.dev1" count as 0.32.0
    if Version(base) not in SpecifierSet(VLLM_TESTED):
        raise UnsupportedVLLMError(
            f"fluxmem's vLLM plugin is tested with vllm{VLLM_TESTED}, but vllm {version} is installed; "
            f'install a tested release (pip install "fluxmem-video[vllm]") or uninstall fluxmem from this environment.'
        )
    return version


def supported_architectures() -> list[str]:
    """Architectures the plugin overrides with the installed vLLM (those whose vLLM class exists)."""
    return [arch for arch, (module, _) in ARCHITECTURES.items() if importlib.util.find_spec(module) is not None]


def register() -> None:
    """The ``vllm.general_plugins`` entry point: check the vLLM version, override the architectures.

    vLLM calls it once per process; calling it again is harmless.
    """
    check_vllm_version()
    from vllm import ModelRegistry

    for arch in supported_architectures():
        ModelRegistry.register_model(arch, ARCHITECTURES[arch][1])


__all__ = [
    "ARCHITECTURES",
    "VLLM_TESTED",
    "ServingSettings",
    "StreamClient",
    "UnsupportedVLLMError",
    "check_vllm_version",
    "register",
    "supported_architectures",
]
