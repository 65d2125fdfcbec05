"""What the memory did to each grid step of a video, as plain arrays for pictures and notebooks.

A :class:`MemoryTrace` pairs the memory's own :class:`~fluxmem.memory.FrameRecord` list with the
frames exactly as the model saw them (sampled, resized), so that every merged token cell maps onto
``cell_size`` pixels of the displayed image. Nothing here is recomputed: token counts are read off
the records, so pictures and statistics cannot disagree with the memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..memory import FluxMemConfig, FrameRecord, compress
from ..memory.hierarchy import LONG, MID, SHORT

TIERS = (SHORT, MID, LONG)
DISPLAY_MODES = ("blend", "first", "last")


@dataclass
class StepView:
    """One temporal grid step (``temporal_patch_size`` raw frames): its image and the memory's decisions.

    Masks are boolean ``[h, w]`` over the merged token grid; ``merged_into`` holds, for cells that
    SDC merged, the raster index of their cluster's anchor (the anchor points to itself), -1 elsewhere.
    """

    index: int
    tier: str
    start_s: float
    end_s: float
    image: np.ndarray
    """uint8 ``[H, W, 3]``: the step's resized frames (blended, first or last), as the model saw them."""
    keep: np.ndarray
    tas_dropped: np.ndarray
    merged_into: np.ndarray
    change_fraction: float | None = None

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.keep.shape

    @property
    def tokens(self) -> int:
        return int(self.keep.size)

    @property
    def kept_tokens(self) -> int:
        return int(self.keep.sum())

    @property
    def sdc_dropped(self) -> np.ndarray:
        """Cells merged into another cell's anchor (dropped, their content averaged into the anchor)."""
        cells = np.arange(self.keep.size).reshape(self.keep.shape)
        return (self.merged_into >= 0) & (self.merged_into != cells)

    @property
    def anchors(self) -> np.ndarray:
        cells = np.arange(self.keep.size).reshape(self.keep.shape)
        return self.merged_into == cells

    def clusters(self) -> dict[int, list[int]]:
        """``{anchor cell: [member cells, anchor included]}`` in raster order."""
        groups: dict[int, list[int]] = {}
        for cell, anchor in enumerate(self.merged_into.reshape(-1).tolist()):
            if anchor >= 0:
                groups.setdefault(anchor, []).append(cell)
        return groups

    def to_dict(self) -> dict:
        """JSON-ready numbers (no image)."""
        return {
            "index": self.index,
            "tier": self.tier,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "tokens": self.tokens,
            "kept": self.kept_tokens,
            "tas_dropped": int(self.tas_dropped.sum()),
            "sdc_merged": int(self.sdc_dropped.sum()),
            "clusters": len(self.clusters()),
            "change_fraction": None if self.change_fraction is None else round(self.change_fraction, 4),
        }


@dataclass
class MemoryTrace:
    """Every grid step of one video with the memory's decisions; see :func:`trace_video`."""

    steps: list[StepView]
    grid_thw: tuple[int, int, int]
    """Merged token grid ``(T, h, w)``."""
    cell_size: tuple[int, int]
    """Pixels of the displayed image that one merged token covers (``spatial_merge * patch``)."""
    temporal_patch_size: int
    config: FluxMemConfig
    sample_fps: float | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(step.tokens for step in self.steps)

    @property
    def kept_tokens(self) -> int:
        return sum(step.kept_tokens for step in self.steps)

    @property
    def retained_fraction(self) -> float:
        return self.kept_tokens / self.tokens if self.tokens else 1.0

    def tier_counts(self) -> dict[str, dict[str, int]]:
        """Frames, tokens before and tokens kept per tier (the format of ``CompressResult.tier_counts``)."""
        counts = {tier: {"frames": 0, "tokens": 0, "kept": 0} for tier in TIERS}
        for step in self.steps:
            entry = counts[step.tier]
            entry["frames"] += 1
            entry["tokens"] += step.tokens
            entry["kept"] += step.kept_tokens
        return counts

    def summary(self) -> dict:
        """Everything but the images, JSON-ready (what ``summary.json`` holds)."""
        t, h, w = self.grid_thw
        return {
            "source": self.source,
            "grid_thw": [t, h, w],
            "cell_size_px": list(self.cell_size),
            "temporal_patch_size": self.temporal_patch_size,
            "sample_fps": self.sample_fps,
            "memory": self.config.to_dict(),
            "tokens": self.tokens,
            "kept": self.kept_tokens,
            "retained_fraction": self.retained_fraction,
            "tiers": self.tier_counts(),
            "steps": [step.to_dict() for step in self.steps],
            **self.extra,
        }


def _grid(mask: torch.Tensor | None, grid_hw: tuple[int, int], fill) -> np.ndarray:
    if mask is None:
        return np.full(grid_hw, fill)
    return mask.detach().to("cpu").numpy().reshape(grid_hw).copy()


def step_image(frames: np.ndarray, step: int, temporal_patch_size: int, display: str = "blend") -> np.ndarray:
    """The picture of grid step ``step`` from raw frames ``[N, H, W, 3]`` (float or uint8).

    ``blend`` averages the step's raw frames (a grid step's tokens describe all of them, so motion
    inside a step shows as a ghost), ``first``/``last`` show one of them.
    """
    if display not in DISPLAY_MODES:
        raise ConfigError(f"display must be one of {', '.join(DISPLAY_MODES)}, got {display!r}.")
    start = step * temporal_patch_size
    group = frames[start : start + temporal_patch_size]
    if len(group) == 0:
        raise InputError(f"grid step {step} has no frames ({len(frames)} frames given).")
    if display == "first":
        picture = group[0]
    elif display == "last":
        picture = group[-1]
    else:
        picture = np.asarray(group, dtype=np.float32).mean(axis=0)
    return np.clip(np.rint(np.asarray(picture, dtype=np.float32)), 0, 255).astype(np.uint8)


def trace_from_records(
    records: list[FrameRecord],
    frames: np.ndarray,
    grid_hw: tuple[int, int],
    *,
    config: FluxMemConfig,
    temporal_patch_size: int = 2,
    timestamps: list[float] | None = None,
    sample_fps: float | None = None,
    source: str | None = None,
    display: str = "blend",
) -> MemoryTrace:
    """Build a trace from the memory's records and the raw frames the model saw (``[N, H, W, 3]``,
    resized to the model's size, ``temporal_patch_size`` frames per record in the order of
    ``records``, which may be any consecutive run of steps; the demo passes the latest few)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be [N, H, W, 3], got shape {frames.shape}.")
    needed = len(records) * temporal_patch_size
    if len(frames) < needed:
        raise InputError(f"{len(records)} grid steps need {needed} frames, got {len(frames)}.")
    height, width = frames.shape[1:3]
    if height % grid_hw[0] or width % grid_hw[1]:
        raise InputError(f"frames of {width}x{height} pixels do not divide into the {grid_hw[1]}x{grid_hw[0]} token grid.")
    if timestamps is None:
        rate = sample_fps or 1.0
        timestamps = [i / rate for i in range(len(frames))]
    steps = []
    for position, record in enumerate(records):
        first = position * temporal_patch_size
        last = first + temporal_patch_size - 1
        tas = _grid(record.tas_dropped, grid_hw, False).astype(bool)
        steps.append(
            StepView(
                index=record.index,
                tier=record.tier,
                start_s=float(timestamps[first]),
                end_s=float(timestamps[last]),
                image=step_image(frames, position, temporal_patch_size, display),
                keep=_grid(record.keep, grid_hw, True).astype(bool),
                tas_dropped=tas,
                merged_into=_grid(record.merged_into, grid_hw, -1).astype(np.int64),
                change_fraction=None if record.change_fraction is None else float(record.change_fraction),
            )
        )
    return MemoryTrace(
        steps=steps,
        grid_thw=(len(records), int(grid_hw[0]), int(grid_hw[1])),
        cell_size=(height // grid_hw[0], width // grid_hw[1]),
        temporal_patch_size=temporal_patch_size,
        config=config,
        sample_fps=sample_fps,
        source=source,
    )


def encode_for_pictures(model, processor, video, sampling=None, *, progress: bool = False):
    """``(adapter, clip, features, grid, frames)``: ``video`` sampled and encoded exactly as
    :func:`fluxmem.inference.answer` does, its merged grid ``(T, h, w)``, the visual features
    ``[T*h*w, D]`` and the frames as the model saw them (``[N, H, W, 3]`` float 0..255)."""
    from ..adapters import registry
    from ..inference import SamplingOptions, build_inputs, build_messages, encode_videos
    from ..video import fetch_video

    sampling = sampling or SamplingOptions()
    adapter = registry.adapter_for(model)
    clip = fetch_video(sampling.video_item(video))
    inputs = build_inputs(processor, build_messages(video, "Describe the video.", sampling))
    encoded = encode_videos(model, inputs, progress=progress)
    if encoded is None:
        raise InputError("the processor produced no video input; pass a video file or a list of frames.")
    features = encoded["video"].pooler_output[0]
    grid = adapter.merged_grid(inputs["video_grid_thw"][0].tolist())
    frames = clip.frames.permute(0, 2, 3, 1).numpy()  # [N, H, W, 3] float 0..255
    patch = int(adapter.vision_config.patch_size) * adapter.spatial_merge_size
    if len(frames) != grid[0] * adapter.temporal_patch_size or frames.shape[1:3] != (grid[1] * patch, grid[2] * patch):
        raise InputError(  # pragma: no cover - both come from the same sampler
            f"decoded frames {frames.shape} do not match the encoded grid {grid}; this is a bug, please report it."
        )
    return adapter, clip, features, grid, frames


def trace_video(
    model,
    processor,
    video,
    *,
    config: FluxMemConfig | None = None,
    sampling=None,
    display: str = "blend",
    progress: bool = False,
) -> MemoryTrace:
    """Run the model's vision encoding and the memory on ``video`` (a path or a list of frames) and
    return, per grid step, the frame as the model saw it and what the memory kept, dropped and merged.

    Frames are sampled and encoded exactly as :func:`fluxmem.inference.answer` does, so the counts
    equal what the switch reports for a question about the same video. ``config`` defaults to the
    configuration attached to ``model`` (``fluxmem.enable`` / ``load_model``), else the defaults.
    """
    from ..adapters import get_state
    from ..inference import SamplingOptions

    sampling = sampling or SamplingOptions()
    if config is None:
        state = get_state(model)
        config = state.config if state is not None else FluxMemConfig()
    adapter, clip, features, grid, frames = encode_for_pictures(model, processor, video, sampling, progress=progress)
    result = compress(features, grid, config, temporal_patch_size=adapter.temporal_patch_size)
    trace = trace_from_records(
        result.frames,
        frames,
        grid[1:],
        config=config,
        temporal_patch_size=adapter.temporal_patch_size,
        timestamps=clip.timestamps,
        sample_fps=clip.sample_fps,
        source=None if not isinstance(video, (str,)) and not hasattr(video, "__fspath__") else str(video),
        display=display,
    )
    trace.extra["sampling"] = sampling.to_dict()
    return trace
