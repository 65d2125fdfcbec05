"""What every family's FluxMem classes share: processing info, processor and model mixins.

The mixins go in front of vLLM's own classes (``class X(ProcessorMixin, vllm's processor)``) and
defer to them whenever FluxMem is off (no ``hf_overrides={"fluxmem": ...}``) or an item is an
image, so that the stock path is exactly vLLM's.

Data contract (one video item, FluxMem on):

- ``video_grid_thw`` ``[3]``: the unmerged patch grid, as the HF processor returns it;
- ``fluxmem_keep`` bool ``[T*H*W]`` over the MERGED grid: which tokens FluxMem kept;
- ``video_embeds`` ``[K, D']`` with ``K = fluxmem_keep.sum()``: the kept tokens in sequence order,
  long-term anchors merged (Qwen3-VL: the deepstack levels concatenated on the last dimension,
  as vLLM's own Qwen3-VL embeddings are).

The processor produces these from pixels; a client may send them itself (precomputed
embeddings, ``docs/serving.md``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading

import torch

from ..errors import InputError
from ..memories.positions import restart_video
from .settings import ServingSettings

logger = logging.getLogger(__name__)

KEEP = "fluxmem_keep"

_RECENT = collections.deque(maxlen=256)
_RECENT_LOCK = threading.Lock()


def recent_memory_stats(limit: int | None = None, *, with_keep: bool = False) -> list[dict]:
    """Memory statistics of the videos this process compressed, newest last (at most 256 kept);
    ``with_keep`` adds each video's keep mask (bool tensor over the merged grid)."""
    with _RECENT_LOCK:
        items = list(_RECENT)
    items = items[-limit:] if limit else items
    return [dict(stats, keep=keep) if with_keep else dict(stats) for stats, keep in items]


def _record(stats: dict, keep: torch.Tensor) -> None:
    with _RECENT_LOCK:
        _RECENT.append((stats, keep))
    logger.info("FluxMem: video %s kept %d of %d tokens", stats["grid_thw"], stats["kept"], stats["tokens"])


# ------------------------------------------------------------------------------------ fields
def keep_fields(fields: dict, hf_inputs, merge: int) -> dict:
    """``fields`` (vLLM's field config for ``hf_inputs``) with ``video_embeds`` sized by the keep
    masks and the keep masks themselves added; unchanged when ``hf_inputs`` holds no keep mask."""
    from vllm.multimodal.inputs import MultiModalFieldConfig

    keep = hf_inputs.get(KEEP) if hasattr(hf_inputs, "get") else None
    if keep is None:
        return fields
    grid = torch.as_tensor(hf_inputs["video_grid_thw"]).reshape(-1, 3)
    sizes = grid.prod(-1) // (merge * merge)
    keep = torch.as_tensor(keep).reshape(-1)
    if keep.dtype != torch.bool or keep.numel() != int(sizes.sum()):
        raise InputError(
            f"{KEEP} must be a bool mask over the merged grid of every video ({int(sizes.sum())} values for "
            f"video_grid_thw {grid.tolist()}), got {keep.dtype} with {keep.numel()} values."
        )
    kept = torch.stack([part.sum() for part in keep.split(sizes.tolist())])
    embeds = hf_inputs.get("video_embeds")
    if embeds is not None and torch.as_tensor(embeds).shape[0] != int(kept.sum()):
        raise InputError(
            f"video_embeds has {torch.as_tensor(embeds).shape[0]} rows but {KEEP} keeps {int(kept.sum())} "
            "tokens; send the kept tokens only, in sequence order."
        )
    fields = dict(fields)
    fields["video_embeds"] = MultiModalFieldConfig.flat_from_sizes("video", kept)
    fields[KEEP] = MultiModalFieldConfig.flat_from_sizes("video", sizes, keep_on_cpu=True)
    fields.pop("pixel_values_videos", None)
    return fields


def parser_class(base, stock_factory):
    """A subclass of the family's data parser whose precomputed video embeddings carry a keep
    mask; ``stock_factory(parser)`` gives the family's own field factory for embedding items."""
    from vllm.multimodal.parse import DictEmbeddingItems

    class FluxMemDataParser(base):
        embedding_fields = {  # noqa: RUF012 - vLLM declares it as a class attribute
            **base.embedding_fields,
            "video": {**base.embedding_fields.get("video", {}), KEEP: "metadata"},
        }

        def _parse_video_data(self, data):
            if not isinstance(data, dict):
                return super()._parse_video_data(data)
            stock = stock_factory(self)
            merge = int(self._spatial_merge_size)
            required, optional = self.embedding_field_sets("video")
            return DictEmbeddingItems(
                data,
                modality="video",
                required_fields=required,
                optional_fields=optional,
                fields_factory=lambda inputs: keep_fields(stock(inputs), inputs, merge),
            )

    FluxMemDataParser.__name__ = f"FluxMem{base.__name__}"
    return FluxMemDataParser


_PARSERS: dict = {}


def _parser_class(base, stock_factory):
    key = (base, stock_factory)
    if key not in _PARSERS:
        _PARSERS[key] = parser_class(base, stock_factory)
    return _PARSERS[key]


# ------------------------------------------------------------------------------------ info
class InfoMixin:
    """Processing info: reads the settings; a data parser that accepts keep masks."""

    fluxmem_stock_factory = None
    """``stock_factory(parser)``: the family's field factory for precomputed embedding items."""

    def get_data_parser(self):
        parser = super().get_data_parser()
        if self.fluxmem_settings() is not None:
            parser.__class__ = _parser_class(type(parser), type(self).fluxmem_stock_factory)
        return parser

    def fluxmem_settings(self) -> ServingSettings | None:
        cached = getattr(self, "_fluxmem_settings", False)
        if cached is False:
            cached = ServingSettings.from_hf_config(self.get_hf_config())
            self._fluxmem_settings = cached
        return cached


# ------------------------------------------------------------------------------------ processor
class ProcessorMixin:
    """Runs the encoder and FluxMem on every video of a processor output (FluxMem on)."""

    _fluxmem_profiling = threading.local()  # per thread: a request rendered meanwhile is never mistaken for it

    @property
    def fluxmem_merge(self) -> int:
        return int(self.info.get_hf_config().vision_config.spatial_merge_size)

    def fluxmem_encoder(self):
        from .encoder import get_encoder

        settings = self.info.fluxmem_settings()
        model_config = self.info.ctx.model_config
        dtype = getattr(torch, settings.dtype) if settings.dtype else model_config.dtype
        return get_encoder(model_config.model, device=settings.device, dtype=dtype,
                           revision=getattr(model_config, "revision", None))  # fmt: skip

    def get_dummy_mm_inputs(self, *args, **kwargs):
        # Profiling inputs: sizes only. Keep every token and skip the encoder (the worst case for
        # the KV cache, and no processor-side tower loaded in the engine process).
        self._fluxmem_profiling.active = True
        try:
            return super().get_dummy_mm_inputs(*args, **kwargs)
        finally:
            self._fluxmem_profiling.active = False

    def _postprocess_hf_mm_data(self, mm_inputs, hf_processor_mm_kwargs, processed_data):
        processed_data = super()._postprocess_hf_mm_data(mm_inputs, hf_processor_mm_kwargs, processed_data)
        settings = self.info.fluxmem_settings()
        pixels = processed_data.get("pixel_values_videos")
        if settings is None or pixels is None:
            return processed_data
        grid = processed_data["video_grid_thw"]
        if getattr(self._fluxmem_profiling, "active", False):
            merge = self.fluxmem_merge
            sizes = (grid.prod(-1) // (merge * merge)).tolist()
            hidden = self.info._get_expected_hidden_size()
            keep = torch.ones(sum(sizes), dtype=torch.bool)
            embeds = torch.zeros(sum(sizes), hidden, dtype=self.info.ctx.model_config.dtype)
        else:
            videos = self.fluxmem_encoder().compress_videos(pixels, grid, settings.method, settings.budget)
            for video in videos:
                _record(video.stats(), video.keep)
            keep = torch.cat([video.keep for video in videos])
            embeds = torch.cat([video.embeds for video in videos])
        del processed_data["pixel_values_videos"]
        processed_data["video_embeds"] = embeds
        processed_data[KEEP] = keep
        return processed_data

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs)
        return keep_fields(fields, hf_inputs, self.fluxmem_merge)


def kept_counts(out_item, merge: int) -> list[int] | None:
    """Kept tokens per temporal grid step of one processed video item, or ``None`` (FluxMem off)."""
    keep = out_item.get(KEEP) if out_item is not None else None
    if keep is None:
        return None
    t, h, w = (int(v) for v in out_item["video_grid_thw"].data.tolist())
    return keep.data.reshape(t, (h // merge) * (w // merge)).sum(-1).tolist()


# ------------------------------------------------------------------------------------ model
def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        return torch.cat([torch.as_tensor(v).reshape(-1, *torch.as_tensor(v).shape[1:]) for v in value])
    return value


class ModelMixin:
    """The model side: kept embeddings as they came, kept tokens at their original positions."""

    # FluxMem decides on the processor's pixels; normalising on the device would let the encoder
    # see other pixels than those the processor-side encoder saw.
    supports_mm_device_do_normalize = False

    _VIDEO_KEYS = ("pixel_values_videos", "video_embeds", "video_grid_thw", "second_per_grid_ts", "timestamps", KEEP)

    def embed_multimodal(self, **kwargs):
        if kwargs.get(KEEP) is None:
            return super().embed_multimodal(**kwargs)
        merge = int(self.config.vision_config.spatial_merge_size)
        grid = _as_tensor(kwargs["video_grid_thw"]).reshape(-1, 3)
        keep = _as_tensor(kwargs[KEEP]).reshape(-1).bool()
        embeds = _as_tensor(kwargs["video_embeds"])
        sizes = (grid.prod(-1) // (merge * merge)).tolist()
        kept = [int(part.sum()) for part in keep.split(sizes)]
        videos = tuple(embeds.to(self.fluxmem_embed_dtype()).split(kept))
        others = {k: v for k, v in kwargs.items() if k not in self._VIDEO_KEYS}
        images = tuple(super().embed_multimodal(**others)) if others else ()
        video_first = next(iter(kwargs)) in self._VIDEO_KEYS
        return videos + images if video_first else images + videos

    def fluxmem_embed_dtype(self) -> torch.dtype:
        return self.visual.dtype

    def get_mrope_input_positions(self, input_tokens, mm_features):
        pruned = [f for f in mm_features if f.modality == "video" and f.data is not None and f.data.get(KEEP) is not None]
        if not pruned:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        tokens, features, kept_index = self.fluxmem_expand(list(input_tokens), mm_features)
        positions, _ = super().get_mrope_input_positions(tokens, features)
        settings = ServingSettings.from_hf_config(self.config)
        if settings is not None and settings.method.restarts_video:  # recent:N: the kept steps are the video
            positions = positions.clone()
            for feature in features:
                keep = feature.data.get(KEEP) if feature.modality == "video" and feature.data is not None else None
                if keep is not None and keep.data.numel() == feature.mm_position.length:  # one block (not Qwen3-VL's)
                    offset = feature.mm_position.offset
                    rows = torch.arange(offset, offset + feature.mm_position.length)
                    restart_video(positions, rows, keep.data.reshape(-1).bool().nonzero().squeeze(1))
        positions = positions[:, torch.as_tensor(kept_index)]
        delta = int(positions.max()) + 1 - len(input_tokens)
        return positions, delta

    def fluxmem_expand(self, input_tokens: list[int], mm_features):
        """The ORIGINAL prompt (every video token back in place), its features with shifted
        offsets, and for each token of the pruned prompt its index in the original one.

        Qwen2-VL / Qwen2.5-VL: a video's placeholder is one run of ``K`` video tokens; the original
        holds ``T*H*W`` there, of which the kept ones are those of the keep mask."""
        video_token = int(self.config.video_token_id)
        out_tokens: list[int] = []
        kept_index: list[int] = []
        features = []
        cursor = 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset = feature.mm_position.offset
            length = feature.mm_position.length
            keep_item = feature.data.get(KEEP) if feature.data is not None else None
            start = len(out_tokens) + (offset - cursor)
            kept_index.extend(range(len(out_tokens), start))
            out_tokens.extend(input_tokens[cursor:offset])
            if keep_item is None:
                kept_index.extend(range(start, start + length))
                out_tokens.extend(input_tokens[offset : offset + length])
                new_length = length
            else:
                keep = keep_item.data.reshape(-1).bool()
                if int(keep.sum()) != length:
                    raise InputError(f"a video's placeholder holds {length} tokens but its keep mask keeps {int(keep.sum())}.")
                kept_index.extend((start + keep.nonzero().squeeze(1)).tolist())
                out_tokens.extend([video_token] * keep.numel())
                new_length = keep.numel()
            position = dataclasses.replace(feature.mm_position, offset=start, length=new_length, is_embed=None)
            features.append(dataclasses.replace(feature, mm_position=position))
            cursor = offset + length
        kept_index.extend(range(len(out_tokens), len(out_tokens) + len(input_tokens) - cursor))
        out_tokens.extend(input_tokens[cursor:])
        return out_tokens, features, kept_index
