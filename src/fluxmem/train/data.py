"""Supervised conversation data: records in, padded model inputs with assistant-only labels out.

A record (one line of a JSON-lines file, or one element of a JSON list)::

    {"video": "clips/a.mp4" | ["a.mp4", "b.mp4"], "image": "x.jpg" | [...],
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "A man opens a door."}],
     "start_time": 12.0, "end_time": 95.5}

Media paths are relative to the dataset's data root. ``<video>`` / ``<image>`` placeholders mark
where each medium goes (in order); without any, all media go before the first human turn. Only the
assistant turns (their text and closing ``<|im_end|>``) carry labels; everything else is -100.

Records are checked when the dataset is built (no assistant turn, placeholder count mismatch:
a clear error naming file and record); media that are missing, unreadable or too long are
skipped when met, listed in a report file, and replaced by the next good sample, so an epoch
never stops on bad data.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, FluxMemError, InputError
from ..outputs import append_line
from .config import DatasetSpec, TrainConfig

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER = re.compile(r"<(video|image)>")
_MAX_CONSECUTIVE_FAILURES = 64


@dataclass
class Record:
    """One validated record: where it came from, its media (absolute paths) and its turns."""

    dataset: str
    index: int
    videos: list[str]
    images: list[str]
    turns: list[tuple[str, str]]  # (role, text with placeholders)
    start_time: float | None = None
    end_time: float | None = None

    @property
    def media(self) -> list[str]:
        return self.videos + self.images


# ---------------------------------------------------------------------- reading
def read_records(spec: DatasetSpec) -> list[Record]:
    """Every record of one annotation file, validated, media paths resolved against its root."""
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"annotation file {spec.path!r} does not exist; check the 'datasets' entry.")
    root = Path(spec.data_root).expanduser() if spec.data_root else path.parent
    if not root.is_dir():
        raise ConfigError(
            f"data root {str(root)!r} of {spec.path!r} does not exist or is not a folder; set data_root to the "
            "folder the media paths are relative to."
        )
    raw = _load_json_or_lines(path)
    return [_parse_record(item, str(path), i, root) for i, item in enumerate(raw)]


def _load_json_or_lines(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path} is not valid JSON: {error}.") from None
        return data
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise InputError(f"{path}, line {number}: not valid JSON ({error}); one JSON object per line.") from None
    return records


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _parse_record(item: Any, source: str, index: int, root: Path) -> Record:
    where = f"{source}, record {index}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: a record must be a JSON object, got {type(item).__name__}.")
    conversations = item.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise InputError(f"{where}: needs a non-empty 'conversations' list of {{'from', 'value'}} turns.")
    turns = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise InputError(f"{where}: turn {k} must have 'from' and 'value'.")
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise InputError(f"{where}: turn {k} is from {turn['from']!r}; use human, gpt or system.")
        turns.append((role, str(turn["value"])))
    if not any(role == "assistant" for role, _ in turns):
        raise InputError(
            f"{where}: the conversation has no assistant turn (from 'gpt'), so there is nothing to learn; "
            "add the answer or drop the record."
        )
    videos = [_resolve(p, root) for p in _as_list(item.get("video"))]
    images = [_resolve(p, root) for p in _as_list(item.get("image"))]
    found = {"video": 0, "image": 0}
    for _, text in turns:
        for kind in _PLACEHOLDER.findall(text):
            found[kind] += 1
    for kind, media in (("video", videos), ("image", images)):
        if found[kind] and found[kind] != len(media):
            raise InputError(
                f"{where}: {found[kind]} <{kind}> placeholder(s) but {len(media)} {kind}(s); give one per placeholder."
            )
    if not found["video"] and not found["image"] and (videos or images):
        first_user = next((k for k, (role, _) in enumerate(turns) if role == "user"), None)
        if first_user is None:
            raise InputError(f"{where}: has media but no human turn to put them in.")
        role, text = turns[first_user]
        turns[first_user] = (role, "<image>\n" * len(images) + "<video>\n" * len(videos) + text)
    elif bool(found["video"]) != bool(videos) or bool(found["image"]) != bool(images):
        missing = "video" if found["video"] != len(videos) else "image"
        raise InputError(f"{where}: placeholders and '{missing}' entries do not match; give one {missing} per <{missing}>.")
    times = {}
    for key in ("start_time", "end_time"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InputError(f"{where}: {key} must be a time in seconds >= 0, got {value!r}.")
        times[key] = None if value is None else float(value)
    if times["start_time"] is not None and times["end_time"] is not None and times["start_time"] >= times["end_time"]:
        raise InputError(
            f"{where}: start_time {times['start_time']:g} s is not before end_time {times['end_time']:g} s; "
            "swap them, or drop one to use the video from its start or to its end."
        )
    return Record(source, index, videos, images, turns, times["start_time"], times["end_time"])


def _resolve(path: str, root: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else root / p)


def mix(datasets: list[list[Record]], rates: list[float], seed: int) -> list[Record]:
    """One epoch's records: each dataset ``floor(rate)`` times whole plus a seeded share of the rest."""
    rng = random.Random(seed)
    mixed: list[Record] = []
    for records, rate in zip(datasets, rates):
        whole = int(rate)
        mixed.extend(records * whole)
        extra = round((rate - whole) * len(records))
        if extra:
            mixed.extend(rng.sample(records, extra))
    return mixed


# ---------------------------------------------------------------------- labels
def assistant_labels(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Labels for a chat-formatted sequence: the tokens of every assistant turn after
    ``<|im_start|>assistant\\n`` up to and including its ``<|im_end|>``; -100 elsewhere."""
    ids = input_ids.tolist()
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer.encode("assistant\n", add_special_tokens=False)
    labels = [IGNORE_INDEX] * len(ids)
    position = 0
    while position < len(ids):
        if ids[position] == start_id and ids[position + 1 : position + 1 + len(header)] == header:
            first = position + 1 + len(header)
            last = first
            while last < len(ids) and ids[last] != end_id:
                last += 1
            for k in range(first, min(last + 1, len(ids))):
                labels[k] = ids[k]
            position = last
        position += 1
    return torch.tensor(labels, dtype=torch.long)


# ---------------------------------------------------------------------- dataset
class SupervisedDataset(torch.utils.data.Dataset):
    """Records -> processor inputs with assistant-only labels, skipping (and reporting) bad samples.

    ``__getitem__(i)`` returns sample ``i`` or, when its media cannot be read (or it is longer
    than ``max_length``), the next good one after it; each bad sample is appended once per
    process to ``report_path`` as a JSON line ``{"dataset", "record", "media", "reason"}``.
    """

    def __init__(self, records: list[Record], processor, config: TrainConfig, report_path: str | os.PathLike | None = None):
        if not records:
            raise ConfigError("the datasets hold no records; check the annotation files and sampling rates.")
        self.records = records
        self.processor = processor
        self.config = config
        self.report_path = Path(report_path) if report_path else None
        self._bad: set[tuple[str, int]] = set()

    @classmethod
    def from_config(cls, config: TrainConfig, processor, report_path=None) -> SupervisedDataset:
        specs = config.dataset_specs()
        per_dataset = [read_records(spec) for spec in specs]
        records = mix(per_dataset, [spec.sampling_rate for spec in specs], config.seed)
        return cls(records, processor, config, report_path)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        last_error = None
        for attempt in range(min(len(self.records), _MAX_CONSECUTIVE_FAILURES)):
            record = self.records[(i + attempt) % len(self.records)]
            key = (record.dataset, record.index)
            if key in self._bad:
                continue
            try:
                return self.build(record)
            except Exception as error:  # noqa: BLE001 - any failure of one sample must not stop the epoch
                last_error = error
                self._report(record, error)
        raise FluxMemError(
            f"{min(len(self.records), _MAX_CONSECUTIVE_FAILURES)} "
            f"samples in a row could not be loaded (last: {last_error}); see {self.report_path or 'the log'}. "
            "Check data_root and the media files."
        )

    # -- one sample
    def messages(self, record: Record) -> list[dict]:
        """qwen-vl-utils chat messages for ``record``, media items carrying the sampling options."""
        videos, images = iter(record.videos), iter(record.images)
        messages = []
        for role, text in record.turns:
            if role != "user" and not _PLACEHOLDER.search(text):
                messages.append({"role": role, "content": [{"type": "text", "text": text}]})
                continue
            content = []
            pieces = _PLACEHOLDER.split(text)  # text, kind, text, kind, ..., text
            for k, piece in enumerate(pieces):
                if k % 2:
                    item = self._video_item(next(videos), record) if piece == "video" else self._image_item(next(images))
                    content.append(item)
                    continue
                if k > 0:
                    piece = piece.removeprefix("\n")  # the newline after a placeholder belongs to it
                if k < len(pieces) - 1:
                    piece = piece.removesuffix("\n")
                if piece:
                    content.append({"type": "text", "text": piece})
            messages.append({"role": role, "content": content})
        return messages

    def build(self, record: Record) -> dict:
        from ..inputs import processor_inputs

        for path in record.media:
            if not os.path.exists(path):
                raise InputError(f"missing file {path}")
        messages = self.messages(record)
        inputs = processor_inputs(self.processor, messages, add_generation_prompt=False)
        input_ids = inputs["input_ids"][0]
        if self.config.max_length is not None and input_ids.numel() > self.config.max_length:
            raise InputError(f"{input_ids.numel()} tokens, more than max_length={self.config.max_length}")
        labels = assistant_labels(input_ids, self.processor.tokenizer)
        if not bool((labels != IGNORE_INDEX).any()):
            raise InputError("no assistant tokens found after tokenisation (chat template without '<|im_start|>assistant')")
        sample = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            if key in sample:
                sample[key] = sample[key][0]
        sample["labels"] = labels
        return sample

    def _video_item(self, path: str, record: Record) -> dict:
        cfg = self.config
        item: dict = {"type": "video", "video": path, "fps": cfg.fps, "max_frames": cfg.max_frames, "max_pixels": cfg.max_pixels}
        if cfg.min_frames is not None:
            item["min_frames"] = cfg.min_frames
        if cfg.min_pixels is not None:
            item["min_pixels"] = cfg.min_pixels
        start, end = record.start_time, record.end_time
        if cfg.video_context is not None:
            if end is None:
                from ..video import probe_video

                end = probe_video(path).duration
            start = max(start or 0.0, end - cfg.video_context)
        if start is not None:
            item["video_start"] = start
        if end is not None:
            item["video_end"] = end
        return item

    def _image_item(self, path: str) -> dict:
        item: dict = {"type": "image", "image": path, "max_pixels": self.config.image_max_pixels or self.config.max_pixels}
        if self.config.min_pixels is not None:
            item["min_pixels"] = self.config.min_pixels
        return item

    def _report(self, record: Record, error: Exception) -> None:
        key = (record.dataset, record.index)
        self._bad.add(key)
        reason = f"{type(error).__name__}: {error}"
        logger.warning("skipping %s record %d: %s", record.dataset, record.index, reason)
        if self.report_path is None:
            return
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"dataset": record.dataset, "record": record.index, "media": record.media, "reason": reason}
        append_line(self.report_path, json.dumps(entry))  # whole lines: a crash tears none


# ---------------------------------------------------------------------- batching
class SupervisedCollator:
    """Pads samples of :class:`SupervisedDataset` on the right and joins their pixels and grids."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, samples: list[dict]) -> dict:
        length = max(s["input_ids"].numel() for s in samples)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
        batch: dict = {}
        for key, value in pads.items():
            if key not in samples[0]:
                continue
            rows = [torch.nn.functional.pad(s[key], (0, length - s[key].numel()), value=value) for s in samples]
            batch[key] = torch.stack(rows)
        for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            parts = [s[key] for s in samples if key in s]
            if parts:
                batch[key] = torch.cat(parts)
        return batch
