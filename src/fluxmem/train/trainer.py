"""The transformers ``Trainer`` with FluxMem in the forward pass and per-component learning rates.

Parameters are grouped by name: ``visual.merger`` is the merger, the rest of ``visual`` the vision
tower, everything else the language model (LoRA adapters included); each group has its own
learning rate and weight decay applies to weights, not to biases and norms.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from transformers import Trainer

from ..adapters import get_state
from ._gradients import gradient_safe_memory

logger = logging.getLogger(__name__)

LLM, MERGER, VISION = "llm", "merger", "vision"


def component_of(name: str) -> str:
    """Which part of a Qwen-VL model a parameter belongs to, by its name."""
    if "visual.merger." in name:
        return MERGER
    if "visual." in name:
        return VISION
    return LLM


def param_groups(model, lrs: dict[str, float], weight_decay: float, decay_names: set[str] | None = None) -> list[dict]:
    """Optimizer parameter groups: one per (component, decays) pair that has trainable parameters."""
    buckets: dict[tuple[str, bool], list] = defaultdict(list)
    names: dict[tuple[str, bool], list[str]] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = name in decay_names if decay_names is not None else (param.ndim >= 2 and "norm" not in name)
        key = (component_of(name), decays)
        buckets[key].append(param)
        names[key].append(name)
    groups = []
    for (component, decays), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lrs[component],
                "weight_decay": weight_decay if decays else 0.0,
                "component": component,
            }
        )
    return groups


class FluxMemTrainer(Trainer):
    """``Trainer`` whose optimizer has separate learning rates for LLM / merger / vision tower and
    whose training steps run the FluxMem switch with gradients flowing through kept (and merged)
    visual tokens. Logs the mean retained fraction of visual tokens as ``fluxmem_retained``."""

    def __init__(self, *args, component_lrs: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        lr = self.args.learning_rate
        self.component_lrs = {LLM: lr, MERGER: lr, VISION: lr, **(component_lrs or {})}
        self._retained: list[float] = []

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups = param_groups(opt_model, self.component_lrs, self.args.weight_decay, decay)
            for group in groups:
                logger.info(
                    "optimizer group %s: %d tensors, lr %g, weight decay %g",
                    group["component"], len(group["params"]), group["lr"], group["weight_decay"],
                )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with gradient_safe_memory():
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        state = get_state(self.accelerator.unwrap_model(model))
        if state is not None and state.last_reports:
            self._retained.append(state.summary()["retained_fraction"])
        return result

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self._retained and "loss" in logs:
            logs["fluxmem_retained"] = round(sum(self._retained) / len(self._retained), 4)
            self._retained = []
        super().log(logs, *args, **kwargs)
