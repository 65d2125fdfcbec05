"""The transformers ``Trainer`` with FluxMem in the forward pass and per-component learning rates.

Parameters are grouped by name: ``visual.merger`` is the merger, the rest of ``visual`` the vision
tower, everything else the language model (LoRA adapters included); each group has its own
learning rate and weight decay applies to weights, not to biases and norms.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

from transformers import Trainer

from ..adapters import get_state, hf

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

    def load_checkpoint_weights(self, resume_from_checkpoint, model, stock):
        """Resume full-model weights under the model's own key names (``stock``: the Trainer's own
        loading, see :func:`hf.route_checkpoint_loading`).

        transformers 5 saves Qwen2.5-VL in its legacy key layout (``model.layers.*``,
        ``visual.*``) while the module holds ``model.language_model.*`` / ``model.visual.*``; the
        stock resume loads the file with ``load_state_dict`` and silently keeps the fresh
        weights. Here the saved names are mapped back through the model's own conversion.
        """
        model = self.model if model is None else model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(model, "peft_config"):
            return stock(resume_from_checkpoint, model)
        names = _saved_names(model)
        files = _weight_files(resume_from_checkpoint)
        if names is None or files is None:
            return stock(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        by_saved = {saved: name for name, saved in names.items()}
        state, unknown = {}, []
        for path in files:
            for key, tensor in load_file(path, device="cpu").items():
                if key in by_saved:
                    state[by_saved[key]] = tensor
                else:
                    unknown.append(key)
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k in names]
        if missing or unknown:
            raise RuntimeError(
                f"checkpoint {resume_from_checkpoint} does not match the model: missing {missing[:5]}, unexpected {unknown[:5]}"
            )
        logger.info("resumed %d weight tensors from %s", len(state), resume_from_checkpoint)


hf.route_checkpoint_loading(FluxMemTrainer, FluxMemTrainer.load_checkpoint_weights)


def _saved_names(model) -> dict[str, str] | None:
    """In-memory parameter name -> name in a saved checkpoint, when saving only renames tensors
    (None when it transforms some, or the installed transformers has no conversion API)."""
    current = model.state_dict()
    by_id = {id(tensor): name for name, tensor in current.items()}
    try:
        saved = hf.saved_state_dict(model, dict(current))
    except Exception:  # noqa: BLE001 - unexpected conversion kinds: fall back to the stock resume
        return None
    if saved is None:
        return None
    names = {}
    for key, tensor in saved.items():
        name = by_id.get(id(tensor))
        if name is None:
            return None
        names[name] = key
    return names


def _weight_files(directory: str) -> list[str] | None:
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        return [os.path.join(directory, shard) for shard in shards]
    return None
