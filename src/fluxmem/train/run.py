"""``train(config)``: load, freeze or wrap with LoRA, train with FluxMem active, save with its settings."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..errors import ConfigError
from ..outputs import atomic_dir, claim_output, move_into, write_text
from .config import TrainConfig
from .data import SupervisedCollator, SupervisedDataset
from .trainer import LLM, MERGER, VISION, FluxMemTrainer, component_of

logger = logging.getLogger(__name__)

SETTINGS_FILE = "fluxmem.json"
CONFIG_FILE = "fluxmem_train.yaml"
COMPLETE_MARK = "fluxmem_complete"


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
    from ..loading import local_or_hub, supported_config

    # A local base model by its absolute path: peft records the name the weights were loaded
    # from, and a relative one would load the adapters only from the directory trained in.
    source = local_or_hub(config.model)
    supported_config(source)  # a clear error before any weight loads
    kwargs = {"dtype": _weights_dtype(config)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    processor = AutoProcessor.from_pretrained(source)
    if getattr(processor.tokenizer, "pad_token_id", None) is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    method, budget = config.memory_method()
    install(model, config.memory_config(), default_active=config.use_fluxmem, positions=config.positions,
            memory=method, budget=budget)  # fmt: skip
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
        raise ConfigError("lora needs peft: pip install 'fluxmem-video[train]' (or pip install peft).") from None
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


def checkpoint_marker():
    """A Trainer callback that marks each checkpoint complete (``fluxmem_complete``) once the
    Trainer has saved all of it: a crash while saving leaves a checkpoint without the mark, which
    ``resume_from_checkpoint: last`` then passes over."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_text(folder / COMPLETE_MARK, json.dumps({"step": state.global_step}) + "\n")

    return CheckpointMarker()


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` of ``folder`` that was saved whole (it carries the mark of
    :func:`checkpoint_marker`); a newer one without it (a crash while saving) is passed over with a
    warning. Checkpoints from runs before the mark: the newest whose ``trainer_state.json`` (the
    Trainer's last file) reads."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()), reverse=True)
    marked = [p for _, p in steps if (p / COMPLETE_MARK).is_file()]
    complete = marked or [p for _, p in steps if _reads_as_json(p / "trainer_state.json")]
    if not complete:
        return None
    torn = [p.name for _, p in steps if p not in complete and int(p.name.split("-")[1]) > int(complete[0].name.split("-")[1])]
    if torn:
        logger.warning("%s not saved whole (interrupted while saving?): resuming from %s.", ", ".join(torn), complete[0].name)
    return str(complete[0])


def _reads_as_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from: a path, or "last" = the newest complete one in output_dir
    (None if none)."""
    value = config.resume_from_checkpoint
    if value is None:
        return None
    if value in ("last", "latest", "auto"):
        found = last_complete_checkpoint(config.output_dir)
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
    with claim_output_dir(config):
        return _train(config, callbacks=callbacks)


def claim_output_dir(config: TrainConfig):
    """``output_dir`` checked against every input (the base model, the data files, the media
    folders) and locked for the run, before the model loads: no input is ever written over."""
    from ..loading import local_model_paths

    specs = config.dataset_specs()
    rank = os.environ.get("RANK", "0")
    return claim_output(
        config.output_dir, flag="output_dir", kind="dir", writes=None, what="model and checkpoints",
        inputs={"model": local_model_paths(config.model), "data file": [spec.path for spec in specs],
                "deepspeed config": config.deepspeed if isinstance(config.deepspeed, str) else None},
        folders={"media folder": [spec.data_root for spec in specs]},
        lock_name=None if rank == "0" else f"rank{rank}",  # the processes of one run each hold their own
    )


def _train(config: TrainConfig, *, callbacks=None) -> TrainResult:
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
        callbacks=[checkpoint_marker(), *(callbacks or [])],
        component_lrs={LLM: config.learning_rate, MERGER: config.merger_lr, VISION: config.vision_lr},
    )
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    saving = output / ".fluxmem-saving"  # the same name on every process: saving may gather across them
    trainer.save_model(str(saving))
    if trainer.is_world_process_zero():
        move_into(saving, output)  # file by file, each renamed into place: no torn weights
        shutil.rmtree(saving, ignore_errors=True)
    result = TrainResult(
        output_dir=str(output),
        global_step=trainer.state.global_step,
        training_loss=float(outcome.training_loss),
        skipped=_count_lines(report),
        log_history=list(trainer.state.log_history),
    )
    if trainer.is_world_process_zero():
        output.mkdir(parents=True, exist_ok=True)
        write_text(output / SETTINGS_FILE, json.dumps(config.fluxmem_record(), indent=2) + "\n")
        write_text(output / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        if config.lora:
            result.adapter_dir = str(output)
            if config.merge_lora:
                result.merged_dir = str(merge_adapters(trainer.accelerator.unwrap_model(trainer.model), processor, output / "merged"))
    if result.skipped:
        logger.warning("%d sample(s) were skipped; see %s", result.skipped, report)
    return result


def merge_adapters(peft_model, processor, directory: str | os.PathLike) -> Path:
    """Fold LoRA adapters into the base weights and save a plain model (FluxMem settings kept);
    the folder is filled under a temporary name and renamed into place."""
    merged = peft_model.merge_and_unload()
    directory = Path(directory)
    with atomic_dir(directory) as temporary:
        merged.save_pretrained(temporary)
        processor.save_pretrained(temporary)
    return directory


def load_trained(path: str | os.PathLike, *, device: str = "cpu", dtype: str = "auto", use_fluxmem: bool | None = None):
    """``(model, processor)`` from a ``fluxmem train`` output: a full model directory, or LoRA
    adapters (their base model is loaded from ``adapter_config.json``), with the saved FluxMem
    settings as the switch's defaults."""
    from ..adapters import install
    from ..loading import adapter_base_model, load_model
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
    base = adapter_base_model(path)
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
