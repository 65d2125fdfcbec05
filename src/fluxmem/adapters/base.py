"""The model seam: what fluxmem needs to know about a vision-language model family.

An adapter answers, for one model instance: where each video's tokens sit and what grid they
form, the M-RoPE positions, how pixels become visual tokens (whole input, or one grid step), and
how to run the language model on given embeddings and positions. Everything else (the memory,
pruning, the streaming session) is written once against this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class VideoSpan:
    """One video's block of visual tokens in one sample of a batch."""

    batch_index: int
    video_index: int  # row of video_grid_thw
    positions: torch.Tensor  # Long [T*H*W]: sequence indices of the video's tokens, in order
    grid_thw: tuple[int, int, int]  # merged-token grid

    @property
    def num_tokens(self) -> int:
        return self.grid_thw[0] * self.grid_thw[1] * self.grid_thw[2]


@dataclass
class PreparedInputs:
    """Language-model inputs before pruning: embeddings with every visual feature placed."""

    inputs_embeds: torch.Tensor  # [B, L, D]
    position_ids: torch.Tensor  # [3, B, L] M-RoPE positions
    rope_deltas: torch.Tensor | None  # [B, 1]: next text position minus sequence length
    video_features: torch.Tensor | None  # [N_video_tokens, D], every video of the batch in order
    extras: dict  # family-specific tensors aligned with the sequence (e.g. Qwen3-VL deepstack)


class ModelAdapter:
    """Base class; one subclass per model family (see ``adapters/qwen2_5_vl.py``)."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    steps_are_independent: bool = True
    """Whether the vision tower encodes each temporal grid step on its own, so that a video may be
    encoded step by step with the same result (checked per family; see streaming.md)."""

    def __init__(self, model) -> None:
        self.model = model
        self.config = model.config

    # ---- numbers read from the config, never hard-coded
    @property
    def vision_config(self):
        return self.config.vision_config

    @property
    def temporal_patch_size(self) -> int:
        return int(self.vision_config.temporal_patch_size)

    @property
    def spatial_merge_size(self) -> int:
        return int(self.vision_config.spatial_merge_size)

    @property
    def video_token_id(self) -> int:
        return int(self.config.video_token_id)

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    # ---- to be provided by each family
    def prepare(self, **model_inputs) -> PreparedInputs:
        """Embed text, images and videos and compute positions, exactly as the stock forward."""
        raise NotImplementedError

    def encode_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``[T*H*W, D]`` for pixel patches of one or more videos."""
        raise NotImplementedError

    def encode_video_output(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor):
        """The stock encoder output for one or more videos, as ``generate`` puts it in
        ``mm_encoder_outputs["video"]``: ``pooler_output`` a tuple of per-video ``[T*H*W, D]``, plus
        any per-token fields the family has (Qwen3-VL: ``deepstack_features``, per level a tuple)."""
        return self.model.model.get_video_features(pixel_values_videos, grid_thw, return_dict=True)

    def encode_videos_stepwise(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor, *,
                               chunk_steps: int = 8, on_steps=None):  # fmt: skip
        """``mm_encoder_outputs["video"]`` for every video of ``video_grid_thw``, encoded
        ``chunk_steps`` grid steps at a time where :attr:`steps_are_independent` (whole videos
        otherwise); equal to :meth:`encode_video_output` on everything at once. ``on_steps(n)`` is
        called after each chunk (progress bars)."""
        per_video: list[list] = []
        offset = 0
        for t, h, w in video_grid_thw.tolist():
            per_step = h * w
            unit = chunk_steps if self.steps_are_independent else t
            parts = []
            for start in range(0, t, unit):
                steps = min(unit, t - start)
                chunk = pixel_values_videos[offset + start * per_step : offset + (start + steps) * per_step]
                grid = torch.tensor([[steps, h, w]], device=video_grid_thw.device)
                parts.append(self.encode_video_output(chunk, grid))
                if on_steps is not None:
                    on_steps(steps)
            offset += t * per_step
            per_video.append(parts)
        return _join_outputs(per_video)

    # ---- shared steps of ``prepare``, in the stock forward's own terms
    def place_features(
        self, input_ids: torch.Tensor, image: torch.Tensor | None, video: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings with image and video features placed by the model's own
        ``get_placeholder_mask`` + ``masked_scatter``; returns ``(embeds, video in embeds' dtype)``."""
        core = self.model.model
        embeds = core.get_input_embeddings()(input_ids)
        if image is not None:
            image = image.to(embeds.device, embeds.dtype)
            image_mask, _ = core.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=image)
            embeds = embeds.masked_scatter(image_mask, image)
        if video is not None:
            video = video.to(embeds.device, embeds.dtype)
            _, video_mask = core.get_placeholder_mask(input_ids, inputs_embeds=embeds, video_features=video)
            embeds = embeds.masked_scatter(video_mask, video)
        return embeds, video

    def stock_positions(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        mm_token_type_ids: torch.Tensor | None,
        **rope_inputs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M-RoPE positions [3, B, L], rope deltas)`` from the model's ``get_rope_index``;
        positions that ``generate`` already computed (a text row, then three M-RoPE rows) win."""
        if mm_token_type_ids is None:
            mm_token_type_ids = self.mm_token_type_ids(input_ids)
        positions, deltas = self.model.model.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids, **rope_inputs)
        if position_ids is not None:
            positions = position_ids[-3:]
        return positions, deltas

    def merged_grid(self, grid_thw) -> tuple[int, int, int]:
        t, h, w = (int(v) for v in grid_thw)
        merge = self.spatial_merge_size
        return t, h // merge, w // merge

    def video_spans(self, input_ids: torch.Tensor, video_grid_thw: torch.Tensor | None) -> list[VideoSpan]:
        """Locate every video's tokens, matching videos to ``video_grid_thw`` rows in order."""
        if video_grid_thw is None:
            return []
        grids = [self.merged_grid(g) for g in video_grid_thw.tolist()]
        spans: list[VideoSpan] = []
        video_index = 0
        is_video = input_ids == self.video_token_id
        for batch_index in range(input_ids.shape[0]):
            token_positions = is_video[batch_index].nonzero().squeeze(1)
            offset = 0
            while offset < token_positions.numel():
                if video_index >= len(grids):
                    raise InputError(
                        "input_ids hold more video tokens than video_grid_thw describes; build the "
                        "inputs with the model's processor."
                    )
                grid = grids[video_index]
                size = grid[0] * grid[1] * grid[2]
                positions = token_positions[offset : offset + size]
                if positions.numel() != size:
                    raise InputError(
                        f"video {video_index} should have {size} tokens (grid {grid}) but the prompt holds "
                        f"{positions.numel()}; build the inputs with the model's processor."
                    )
                spans.append(VideoSpan(batch_index, video_index, positions, grid))
                offset += size
                video_index += 1
        if video_index != len(grids):
            raise InputError(
                f"video_grid_thw describes {len(grids)} videos but the prompt holds {video_index}; build the "
                "inputs with the model's processor."
            )
        return spans

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """0 text, 1 image, 2 video: what the processor returns, rebuilt for callers that lack it."""
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.image_token_id] = 1
        types[input_ids == self.video_token_id] = 2
        return types

    # ---- generation plumbing (Qwen-style defaults; override where a family differs)
    def remember_rope_deltas(self, deltas: torch.Tensor) -> None:
        """Store where text continues after the prompt, as the stock forward would."""
        self.model.model.rope_deltas = deltas

    def rope_deltas(self) -> torch.Tensor | None:
        return getattr(self.model.model, "rope_deltas", None)

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.config.get_text_config())

    # ---- cache reuse (streaming sessions)
    @property
    def has_recurrent_state(self) -> bool:
        """Whether the text model has linear-attention (recurrent) layers (Qwen3.5): their cache
        state cannot be cropped back to a shorter prefix, so reuse must snapshot and restore."""
        layer_types = getattr(self.config.get_text_config(), "layer_types", None) or ()
        return "linear_attention" in layer_types

    @staticmethod
    def snapshot_cache(cache):
        """An independent copy of ``cache``: keys/values and any recurrent/conv states."""
        import copy

        return copy.deepcopy(cache)

    @staticmethod
    def restore_cache(snapshot):
        """A fresh working cache equal to ``snapshot``, which stays untouched for the next use."""
        import copy

        return copy.deepcopy(snapshot)

    def pruned_extras(self, prepared: PreparedInputs, pruned) -> dict:
        """Extra forward arguments derived from the pruning (e.g. pruned deepstack features)."""
        return {}


def _join_outputs(per_video: list[list]):
    """One encoder output from per-video lists of chunk outputs: ``pooler_output`` and every
    per-level tuple field (``deepstack_features``) concatenated per video."""
    first = per_video[0][0]
    pooled = tuple(torch.cat([torch.cat(part.pooler_output) for part in parts]) for parts in per_video)
    fields = {"pooler_output": pooled}
    levels = getattr(first, "deepstack_features", None)
    if levels:
        fields["deepstack_features"] = [
            tuple(torch.cat([torch.cat(part.deepstack_features[level]) for part in parts]) for parts in per_video)
            for level in range(len(levels))
        ]
    return type(first)(**fields)

