"""Supervised fine-tuning of Qwen2.5-VL with FluxMem in the forward pass (``fluxmem train``).

* :class:`TrainConfig` - every setting (YAML / command line), defaults = the published recipe.
* :func:`train` - load, freeze or LoRA-wrap, train with the transformers ``Trainer``, save.
* :class:`SupervisedDataset` / :class:`SupervisedCollator` - conversation records to padded
  inputs with assistant-only labels; bad media skipped and reported.
* :class:`FluxMemTrainer` - per-component learning rates, gradient-safe pruning.
* :func:`load_trained` - a trained output (full or LoRA) with its saved FluxMem settings.
"""

from .config import DEFAULT_LORA_TARGETS, DatasetSpec, TrainConfig, parse_overrides
from .data import (
    IGNORE_INDEX,
    Record,
    SupervisedCollator,
    SupervisedDataset,
    assistant_labels,
    mix,
    read_records,
)
from .run import (
    TrainResult,
    load_for_training,
    load_trained,
    merge_adapters,
    prepare_parameters,
    train,
)
from .trainer import FluxMemTrainer, component_of, param_groups

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
