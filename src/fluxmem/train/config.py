"""Training settings: one dataclass, read from YAML, every key also settable on the command line.

The defaults are the published FluxMem recipe (one epoch of supervised fine-tuning of
Qwen2.5-VL-7B with the memory in the forward pass). Unknown keys are rejected with the closest
valid one, so a typo never silently trains with a default.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..memory import FluxMemConfig

# LLM linear layers only: the vision tower's MLP uses the same projection names.
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class DatasetSpec:
    """One annotation file (JSON list or JSON lines) and the folder its media paths are relative to.

    ``sampling_rate`` scales how often its records appear in an epoch: 0.5 takes a seeded half,
    2.0 repeats every record twice, 1.5 takes every record once plus a seeded half again.
    """

    path: str
    data_root: str | None = None
    sampling_rate: float = 1.0

    @classmethod
    def parse(cls, value: Any, default_root: str | None) -> DatasetSpec:
        """From ``{"path": ..., "data_root": ..., "sampling_rate": ...}`` or ``"file.jsonl%50"``
        (Qwen-VL fine-tuning's shorthand: percent of the records)."""
        if isinstance(value, str):
            path, _, percent = value.partition("%")
            try:
                rate = float(percent) / 100 if percent else 1.0
            except ValueError:
                raise ConfigError(f"dataset {value!r}: the part after '%' must be a percentage, e.g. data.jsonl%50.") from None
            spec = cls(path=path, data_root=default_root, sampling_rate=rate)
        elif isinstance(value, dict):
            names = {f.name for f in fields(cls)}
            for key in value:
                if key not in names:
                    raise ConfigError(f"dataset entry key {key!r} is not known{_closest(key, names)}; valid: {sorted(names)}.")
            if "path" not in value:
                raise ConfigError(f"dataset entry {value!r} needs a 'path' (the annotation file).")
            spec = cls(**{"data_root": default_root, **value})
        else:
            raise ConfigError(f"a dataset is a path or a mapping with 'path', got {value!r}.")
        if isinstance(spec.sampling_rate, bool) or not isinstance(spec.sampling_rate, (int, float)) or spec.sampling_rate <= 0:
            raise ConfigError(f"dataset {spec.path!r}: sampling_rate must be a positive number, got {spec.sampling_rate!r}.")
        return spec


@dataclass
class TrainConfig:
    """Every setting of ``fluxmem train``; the defaults reproduce the published recipe."""

    # --- model and output
    model: str = ""
    """Hugging Face id or local directory of the Qwen2.5-VL model to fine-tune."""
    output_dir: str = "outputs/fluxmem-sft"
    model_dtype: str = "auto"
    """Weights' dtype when loading: auto = bfloat16 under DeepSpeed with bf16, else float32."""
    attn_implementation: str | None = None
    """sdpa, eager or flash_attention_2 (the model's default when unset)."""

    # --- data
    datasets: list = field(default_factory=list)
    """Annotation files: paths, ``path%PERCENT``, or mappings with path / data_root / sampling_rate."""
    data_root: str | None = None
    """Folder media paths are relative to, for datasets that give none (default: the annotation file's folder)."""
    max_length: int | None = None
    """Samples with more tokens (before pruning) are skipped and reported; unset keeps all."""
    skipped_report: str = "skipped_samples.jsonl"
    """Where unreadable or skipped samples are listed, relative to output_dir."""

    # --- frames
    fps: float = 2.0
    max_frames: int = 256
    min_frames: int | None = None
    max_pixels: int = 256 * 28 * 28
    min_pixels: int | None = None
    image_max_pixels: int | None = None
    """Pixel budget of images (default: max_pixels)."""
    video_context: float | None = 128.0
    """Seconds of video before the sample's end time (or the video's end) that the model sees; unset = all."""

    # --- FluxMem in the forward pass
    use_fluxmem: bool = True
    short_frames: int = 8
    medium_frames: int = 64
    direct_drop_sim: float | None = 0.8
    pair_sim_threshold: float | None = None
    memory: str | None = None
    """Memory method in the forward pass (``fluxmem memories``: recent:4, evs:0.5...; unset = FluxMem with the settings above)."""
    budget: int | float | str | None = None
    """Token budget per video: a count (1200), a fraction (0.35) or match:METHOD; unset = the method's own."""

    # --- what to train
    tune_llm: bool = True
    tune_merger: bool = True
    tune_vision: bool = False
    learning_rate: float = 1e-5
    """Learning rate of the language model (and of LoRA adapters)."""
    merger_lr: float = 1e-5
    vision_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    bf16: bool = True
    seed: int = 42

    # --- LoRA (peft)
    lora: bool = False
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_target_modules: str = DEFAULT_LORA_TARGETS
    """Regex over module names (peft semantics); default: the language model's linear layers."""
    merge_lora: bool = False
    """Also write the base model with the adapters merged in, to ``output_dir/merged``."""

    # --- running
    deepspeed: str | None = None
    """A DeepSpeed JSON config (e.g. configs/deepspeed/zero3.json); needs ``pip install deepspeed``."""
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    """A checkpoint directory, or "last" for the newest checkpoint in output_dir (none: start fresh)."""
    dataloader_num_workers: int = 4
    report_to: str = "none"
    use_cpu: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _field_type(f)))
        positive = ("fps", "max_frames", "max_pixels", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "lora_r", "lora_alpha", "logging_steps", "save_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name in ("min_frames", "min_pixels", "image_max_pixels", "max_length", "video_context"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0 (or unset), got {value}.")
        for name in ("learning_rate", "merger_lr", "vision_lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}.")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}.")
        if self.model_dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"model_dtype must be auto, bfloat16, float16 or float32, got {self.model_dtype!r}.")
        if not (self.tune_llm or self.tune_merger or self.tune_vision or self.lora):
            raise ConfigError("nothing to train: set tune_llm, tune_merger, tune_vision or lora to true.")
        self.memory_config()  # validates short_frames / medium_frames / similarities
        self.memory_method()  # an unknown method or a bad budget fails now, in one line

    def require_runnable(self) -> None:
        """Checks that only matter when training starts (a config may be built piece by piece)."""
        if not self.model:
            raise ConfigError("no model given: set 'model' (a Hugging Face id or a local directory) in the config or with --model.")
        if not self.datasets:
            raise ConfigError("no training data: set 'datasets' to one or more annotation files (JSON or JSON lines).")
        if self.data_root is not None and not Path(self.data_root).expanduser().is_dir():
            problem = "is a file" if Path(self.data_root).expanduser().exists() else "does not exist"
            raise ConfigError(f"data_root {self.data_root!r} {problem}; point it at the folder the media paths are relative to.")
        if self.deepspeed is not None:
            if Path(self.deepspeed).is_dir():
                raise ConfigError(f"deepspeed config {self.deepspeed!r} is a directory; pass a JSON file such as configs/deepspeed/zero2.json.")
            if not Path(self.deepspeed).is_file():
                raise ConfigError(f"deepspeed config {self.deepspeed!r} does not exist; see configs/deepspeed/.")
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise ConfigError(
                    "deepspeed is set but the deepspeed package is not installed: pip install deepspeed (it builds "
                    "against your CUDA torch; multi-GPU only), or drop deepspeed to train without it."
                )

    # ------------------------------------------------------------------ views
    def memory_config(self) -> FluxMemConfig:
        from ..memory import FluxMemConfig  # torch: loaded only when training starts

        return FluxMemConfig(
            short_frames=self.short_frames,
            medium_frames=self.medium_frames,
            direct_drop_sim=self.direct_drop_sim,
            pair_sim_threshold=self.pair_sim_threshold,
        )

    def memory_method(self):
        """``(method, budget)``: the memory method (``None``: FluxMem with :meth:`memory_config`) and budget."""
        from ..memories import Budget, get

        method = None if self.memory is None else get(self.memory)
        return method, None if self.budget is None else Budget.parse(self.budget)

    def fluxmem_record(self) -> dict:
        """What a saved model records under ``config.fluxmem`` (read back by ``fluxmem.loading``)."""
        record = {**self.memory_config().to_dict(), "use_fluxmem": self.use_fluxmem}
        method, budget = self.memory_method()
        if method is not None:
            record["memory"] = method.spec
        if budget is not None:
            record["budget"] = str(budget)
        return record

    def dataset_specs(self) -> list[DatasetSpec]:
        return [DatasetSpec.parse(entry, self.data_root) for entry in self.datasets]

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, data: dict | None, *, source: str = "config") -> TrainConfig:
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(f"{source}: unknown key {key!r}{_closest(key, names)}. See `fluxmem train --help` for every key.")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None, overrides: dict | None = None) -> TrainConfig:
        """The YAML file's keys, then ``overrides`` on top (command-line values)."""
        data: dict = {}
        if path is not None:
            path = Path(path)
            if path.is_dir():
                raise ConfigError(f"config file {str(path)!r} is a directory; pass a YAML file, e.g. configs/train/smoke.yaml.")
            if not path.is_file():
                raise ConfigError(f"config file {str(path)!r} does not exist; see configs/train/ for examples.")
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as error:
                raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values, got {type(data).__name__}.")
        config = cls.from_dict(data, source=str(path) if path else "config")
        if overrides:
            config = cls.from_dict({**config.to_dict(), **overrides}, source="command line")
        return config


def parse_overrides(argv: list[str]) -> dict:
    """``["--key", "value", "--other=value"]`` -> ``{"key": value}``; values are read as YAML
    scalars/lists (``true``, ``1e-5``, ``[a.json, b.json]``), dashes in keys become underscores."""
    names = [f.name for f in fields(TrainConfig)]
    overrides: dict = {}
    items = list(argv)
    while items:
        token = items.pop(0)
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: give settings as --key value.")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(f"unknown option --{key}{_closest(key, names, prefix='--')}.")
        if not eq:
            if not items or (items[0].startswith("--") and not _is_number(items[0])):
                raise ConfigError(f"option --{key} needs a value, e.g. --{key} VALUE.")
            value = items.pop(0)
        overrides[key] = read_value(value)
    return overrides


def read_value(text: str) -> Any:
    """A command-line value as YAML would read it (``none``/``null`` give None)."""
    if text.strip().lower() in ("none", "null", "~"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def field_help() -> list[tuple[str, str, str]]:
    """``(key, default, description)`` for every setting, for ``--help``."""
    docs = _field_docs()
    rows = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, repr(default), docs.get(f.name, "")))
    return rows


# ---------------------------------------------------------------------- helpers
def _closest(key: str, names, prefix: str = "") -> str:
    match = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    if not match:
        return ""
    return f" (did you mean {prefix}{match[0]}?)" if prefix else f" (did you mean {match[0]!r}?)"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _field_type(f) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    return hints[f.name]


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's annotation; ints become floats where floats are expected."""
    args = typing.get_args(annotation)
    optional = type(None) in args or annotation is type(None)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty (null).")
    base = annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        bases = [a for a in args if a is not type(None)]
        if len(bases) > 1:  # e.g. a budget: a count, a fraction or a string
            for candidate in bases:
                try:
                    return _coerce(name, value, candidate)
                except ConfigError:
                    pass
            raise ConfigError(f"{name} must be one of {', '.join(b.__name__ for b in bases)}, got {value!r}.")
        base = bases[0]
    origin = typing.get_origin(base) or base
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}.")
    if origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number, got {value!r}.")
    if origin is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise ConfigError(f"{name} must be a string, got {value!r}.")
    if origin is list:
        if isinstance(value, (str, dict)):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{name} must be a list, got {value!r}.")
    return value


def _field_docs() -> dict[str, str]:
    """The docstring under each field (read from the source; empty when unavailable)."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(TrainConfig))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
