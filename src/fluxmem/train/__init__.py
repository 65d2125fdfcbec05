"""Supervised fine-tuning of Qwen2.5-VL with FluxMem in the forward pass (``fluxmem train``).

* :class:`TrainConfig` - every setting (YAML / command line), defaults = the published recipe.
* :func:`train` - load, freeze or LoRA-wrap, train with the transformers ``Trainer``, save.
* :class:`SupervisedDataset` / :class:`SupervisedCollator` - conversation records to padded
  inputs with assistant-only labels; bad media skipped and reported.
* :class:`FluxMemTrainer` - per-component learning rates, gradient-safe pruning.
* :func:`load_trained` - a trained output (full or LoRA) with its saved FluxMem settings.
"""

from __future__ import annotations

import importlib

# name -> submodule; loaded on first use so that `fluxmem train --help` (and anything importing
# the settings alone) does not import transformers' Trainer, peft or datasets.
_LAZY = {
    "DEFAULT_LORA_TARGETS": ".config",
    "DatasetSpec": ".config",
    "TrainConfig": ".config",
    "parse_overrides": ".config",
    "IGNORE_INDEX": ".data",
    "Record": ".data",
    "SupervisedCollator": ".data",
    "SupervisedDataset": ".data",
    "assistant_labels": ".data",
    "mix": ".data",
    "read_records": ".data",
    "TrainResult": ".run",
    "load_for_training": ".run",
    "load_trained": ".run",
    "merge_adapters": ".run",
    "prepare_parameters": ".run",
    "train": ".run",
    "FluxMemTrainer": ".trainer",
    "component_of": ".trainer",
    "param_groups": ".trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "IGNORE_INDEX",
    "DatasetSpec",
    "FluxMemTrainer",
    "Record",
    "SupervisedCollator",
    "SupervisedDataset",
    "TrainConfig",
    "TrainResult",
    "assistant_labels",
    "component_of",
    "load_for_training",
    "load_trained",
    "merge_adapters",
    "mix",
    "param_groups",
    "parse_overrides",
    "prepare_parameters",
    "read_records",
    "train",
]
