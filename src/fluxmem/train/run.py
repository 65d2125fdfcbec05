"""``train(config)``: load, freeze or wrap with LoRA, train with FluxMem active, save with its settings."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..errors import ConfigError
from .config import TrainConfig
from .data import SupervisedCollator, SupervisedDataset
from .trainer import LLM, MERGER, VISION, FluxMemTrainer, component_of

logger = logging.getLogger(__name__)

SETTINGS_FILE = "fluxmem.json"
CONFIG_FILE = "fluxmem_train.yaml"


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: str
    global_step: int
    training_loss: float
    skipped: int
    log_history: list[dict] = field(default_factory=list)
    adapter_dir: str | None = None
    merged_dir: str | None = None


def load_for_training(config: TrainConfig):
    """``(model, processor)`` ready to train: FluxMem attached, settings recorded, parameters frozen
    or LoRA-wrapped as the config says."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..adapters import install
    from ..loading import supported_config

    supported_config(config.model)  # a clear error before any weight loads
    kwargs = {"dtype": _weights_dtype(config)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(config.model, **kwargs)
    processor = AutoProcessor.from_pretrained(config.model)
    if getattr(processor.tokenizer, "pad_token_id", None) is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    method, budget = config.memory_method()
    install(model, config.memory_config(), default_active=config.use_fluxmem, memory=method, budget=budget)
    model.config.fluxmem = config.fluxmem_record()
    model.config.use_cache = False
    model = prepare_parameters(model, config)
    return model, processor


def prepare_parameters(model, config: TrainConfig):
    """Freeze what is not trained; with ``lora`` wrap the model in ``peft`` (adapters on the
    language model, the merger trained whole when ``tune_merger``). Returns the model to train."""
    if not config.lora:
        wanted = {LLM: config.tune_llm, MERGER: config.tune_merger, VISION: config.tune_vision}
        for name, param in model.named_parameters():
            param.requires_grad_(wanted[component_of(name)])
        return model
    if config.tune_vision:
        raise ConfigError("tune_vision is not available with lora: train the vision tower with full fine-tuning (lora: false).")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("lora needs peft: pip install 'fluxmem[train]' (or pip install peft).") from None
    for param in model.parameters():
        param.requires_grad_(False)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        modules_to_save=["merger"] if config.tune_merger else None,
        task_type="CAUSAL_LM",
    )
    try:
        with peft_quiet():
            return get_peft_model(model, lora)
    except ValueError as error:
        raise ConfigError(f"lora_target_modules {config.lora_target_modules!r} matches no layer of this model: {error}") from None


def training_arguments(config: TrainConfig):
    from transformers import TrainingArguments

    checkpointing = {"use_reentrant": False} if config.gradient_checkpointing else None
    parameters = inspect.signature(TrainingArguments.__init__).parameters
    prefix = "activation" if "activation_checkpointing" in parameters else "gradient"  # renamed in transformers 5
    return TrainingArguments(
        **{f"{prefix}_checkpointing": config.gradient_checkpointing, f"{prefix}_checkpointing_kwargs": checkpointing},
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        max_grad_norm=config.max_grad_norm,
        bf16=config.bf16,
        deepspeed=config.deepspeed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        dataloader_num_workers=config.dataloader_num_workers,
        report_to=config.report_to,
        remove_unused_columns=False,  # the collator's pixel/grid tensors are not in PeftModel.forward's signature
        label_names=["labels"],
        seed=config.seed,
        use_cpu=config.use_cpu,
    )


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from: a path, or "last" = the newest in output_dir (None if none)."""
    value = config.resume_from_checkpoint
    if value is None:
        return None
    if value in ("last", "latest", "auto"):
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(config.output_dir) if os.path.isdir(config.output_dir) else None
        if found is None:
            logger.warning("resume_from_checkpoint=%s but %s holds no checkpoint: starting fresh.", value, config.output_dir)
        return found
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint {value!r} is not a checkpoint directory (or use 'last').")
    return value


def train(config: TrainConfig, *, callbacks=None) -> TrainResult:
    """Fine-tune as ``config`` says and save the result to ``config.output_dir``.

    Saves the model (full) or the adapters (LoRA, plus ``merged/`` with ``merge_lora``), the
    processor, ``fluxmem.json`` (the memory settings, also in the model config under
    ``fluxmem``) and ``fluxmem_train.yaml`` (every setting of the run).
    """
    config.require_runnable()
    output = Path(config.output_dir)
    checkpoint = resolve_checkpoint(config)
    model, processor = load_for_training(config)
    report = output / config.skipped_report
    dataset = SupervisedDataset.from_config(config, processor, report_path=report)
    trainer = FluxMemTrainer(
        model=model,
        args=training_arguments(config),
        train_dataset=dataset,
        data_collator=SupervisedCollator(processor.tokenizer.pad_token_id),
        processing_class=processor,
        callbacks=callbacks,
        component_lrs={LLM: config.learning_rate, MERGER: config.merger_lr, VISION: config.vision_lr},
    )
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    result = TrainResult(
        output_dir=str(output),
        global_step=trainer.state.global_step,
        training_loss=float(outcome.training_loss),
        skipped=_count_lines(report),
        log_history=list(trainer.state.log_history),
    )
    if trainer.is_world_process_zero():
        output.mkdir(parents=True, exist_ok=True)
        (output / SETTINGS_FILE).write_text(json.dumps(config.fluxmem_record(), indent=2) + "\n")
        (output / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        if config.lora:
            result.adapter_dir = str(output)
            if config.merge_lora:
                result.merged_dir = str(merge_adapters(trainer.accelerator.unwrap_model(trainer.model), processor, output / "merged"))
    if result.skipped:
        logger.warning("%d sample(s) were skipped; see %s", result.skipped, report)
    return result


def merge_adapters(peft_model, processor, directory: str | os.PathLike) -> Path:
    """Fold LoRA adapters into the base weights and save a plain model (FluxMem settings kept)."""
    merged = peft_model.merge_and_unload()
    directory = Path(directory)
    merged.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def load_trained(path: str | os.PathLike, *, device: str = "cpu", dtype: str = "auto", use_fluxmem: bool | None = None):
    """``(model, processor)`` from a ``fluxmem train`` output: a full model directory, or LoRA
    adapters (their base model is loaded from ``adapter_config.json``), with the saved FluxMem
    settings as the switch's defaults."""
    from ..adapters import install
    from ..loading import load_model
    from ..memory import FluxMemConfig

    path = Path(path)
    adapter_config = path / "adapter_config.json"
    settings_file = path / SETTINGS_FILE
    if not adapter_config.is_file():
        model, processor = load_model(path, device=device, dtype=dtype, use_fluxmem=True)
        saved = getattr(model.config, "fluxmem", None) or {}
        active = saved.get("use_fluxmem", True) if use_fluxmem is None else use_fluxmem
        install(model, FluxMemConfig.from_dict(saved), default_active=active, memory=saved.get("memory"), budget=saved.get("budget"))
        return model, processor
    from peft import PeftModel

    saved = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter_config} names no base model; load the base and apply the adapters with peft.")
    model, processor = load_model(base, device=device, dtype=dtype, fluxmem=FluxMemConfig.from_dict(saved))
    with peft_quiet():
        model = PeftModel.from_pretrained(model, str(path))
    model.eval()
    active = saved.get("use_fluxmem", True) if use_fluxmem is None else use_fluxmem
    install(model, FluxMemConfig.from_dict(saved), default_active=active, memory=saved.get("memory"), budget=saved.get("budget"))
    if (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path))
    return model, processor


@contextlib.contextmanager
def peft_quiet():
    """peft (not fluxmem) still reads transformers' old ``is_gradient_checkpointing`` name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _weights_dtype(config: TrainConfig):
    if config.model_dtype != "auto":
        return getattr(torch, config.model_dtype)
    return torch.bfloat16 if (config.deepspeed and config.bf16) else torch.float32


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
