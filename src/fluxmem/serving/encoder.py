"""The processor-side vision encoder: the family's transformers vision tower plus FluxMem.

vLLM must know a video's kept-token count when it tokenises the prompt (the scheduler budgets
encoder work and KV cache from the placeholder length), so the plugin encodes videos and runs
the memory in the multimodal processor, i.e. in vLLM's API-server process (``docs/serving.md``).
Only the vision tower is materialised: the model is built on the ``meta`` device, its tower is
rebuilt on ``device`` and filled with the checkpoint's vision weights, read tensor by tensor from
the safetensors files. The encoding itself goes through ``fluxmem.adapters.hf.encode`` (the
model's own ``get_video_features``), so the features are exactly those transformers computes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, InputError
from ..memories import FluxMem, Memory, MemoryResult
from ..memory import FluxMemConfig

logger = logging.getLogger(__name__)

_VISION_PREFIXES = ("model.visual.", "visual.")
_LOCK = threading.Lock()
_ENCODERS: dict[tuple[str, str, str], VisionEncoder] = {}


@dataclass
class VideoMemory:
    """One video after the encoder and the memory."""

    keep: torch.Tensor  # bool [T*H*W] over the merged grid
    embeds: torch.Tensor  # [K, D'] kept tokens (D' = D * (1 + deepstack levels) for Qwen3-VL)
    grid_thw: tuple[int, int, int]  # merged grid
    result: MemoryResult
    encode_ms: float
    memory_ms: float

    def stats(self) -> dict:
        self.result.memory_ms = self.memory_ms
        return self.result.stats(grid_thw=list(self.grid_thw), encode_ms=round(self.encode_ms, 3)).to_dict()


def _checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / name for name in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"no .safetensors weights in {path}; FluxMem's serving encoder reads safetensors checkpoints.")
    return files


def _resolve_path(model: str, revision: str | None) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, allow_patterns=["*.json", "*.safetensors"]))


class VisionEncoder:
    """The vision tower of one served model, on ``device`` in ``dtype``; shared per process."""

    def __init__(self, model: str, *, device: str, dtype: torch.dtype, revision: str | None = None) -> None:
        import transformers
        from safetensors import safe_open

        path = _resolve_path(model, revision)
        config = transformers.AutoConfig.from_pretrained(path)
        architectures = getattr(config, "architectures", None) or []
        model_class = getattr(transformers, architectures[0], None) if architectures else None
        if model_class is None:
            raise ConfigError(f"{model}: config.json names no transformers architecture FluxMem can build.")
        with torch.device("meta"):
            shell = model_class(config)
        tower_class = type(shell.model.visual)
        tower = tower_class._from_config(config.vision_config, dtype=dtype).to(device).eval()
        state = {}
        for file in _checkpoint_files(path):
            with safe_open(str(file), "pt", device="cpu") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    for prefix in _VISION_PREFIXES:
                        if key.startswith(prefix):
                            state[key[len(prefix):]] = handle.get_tensor(key)
                            break
        missing, unexpected = tower.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{model}: the checkpoint's vision weights do not fit {tower_class.__name__} "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})."
            )
        shell.model.visual = tower
        self.model = shell
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def merge(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    @property
    def temporal_patch_size(self) -> int:
        return int(self.config.vision_config.temporal_patch_size)

    @torch.no_grad()
    def encode(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor):
        """Per video: ``(features [T*H*W, D], deepstack levels or None)`` from the stock encoder."""
        from ..adapters import hf

        output = hf.encode(
            self.model, "video", pixel_values_videos.to(self.device, self.dtype), video_grid_thw.to(self.device)
        )
        tokens = tuple(output.pooler_output)
        levels = hf.deepstack(output)
        per_video = []
        offset = 0
        for index, video in enumerate(tokens):
            count = video.shape[0]
            video_levels = None if levels is None else [level[offset : offset + count] for level in levels]
            per_video.append((video, video_levels))
            offset += count
        return per_video

    def compress_videos(
        self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor, memory: Memory | FluxMemConfig,
        budget=None,
    ) -> list[VideoMemory]:
        """Encode every video of a processor output and run the memory on each one on its own."""
        if isinstance(memory, FluxMemConfig):
            memory = FluxMem.from_config(memory)
        from ..memory import merge_kept

        out: list[VideoMemory] = []
        offset = 0
        for grid in video_grid_thw.tolist():
            t, h, w = (int(v) for v in grid)
            rows = t * h * w
            pixels = pixel_values_videos[offset : offset + rows]
            offset += rows
            if pixels.shape[0] != rows:
                raise InputError(f"pixel_values_videos holds fewer rows than video_grid_thw {grid} describes.")
            start = time.perf_counter()
            (features, levels), = self.encode(pixels, torch.tensor([[t, h, w]]))
            encode_ms = (time.perf_counter() - start) * 1000
            merged_grid = (t, h // self.merge, w // self.merge)
            start = time.perf_counter()
            result = memory.compress(features, merged_grid, temporal_patch_size=self.temporal_patch_size, budget=budget)
            # the kept rows only, anchors carrying their cluster means (no full-size copy)
            parts = [merge_kept(result, features)]
            if levels is not None:
                parts += [merge_kept(result, level) for level in levels]
            embeds = torch.cat(parts, dim=-1)
            memory_ms = (time.perf_counter() - start) * 1000
            out.append(VideoMemory(result.keep.cpu(), embeds.cpu(), merged_grid, result, encode_ms, memory_ms))
        return out


def get_encoder(model: str, *, device: str, dtype: torch.dtype, revision: str | None = None) -> VisionEncoder:
    """The process's encoder for ``model`` on ``device`` in ``dtype`` (built on first use)."""
    key = (os.fspath(model), str(device), str(dtype))
    with _LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            start = time.perf_counter()
            encoder = VisionEncoder(model, device=device, dtype=dtype, revision=revision)
            _ENCODERS[key] = encoder
            logger.info("FluxMem: vision encoder of %s on %s (%s) loaded in %.1f s", model, device, dtype,
                        time.perf_counter() - start)
        return encoder
