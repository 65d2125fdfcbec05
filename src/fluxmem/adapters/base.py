"""The model seam: what fluxmem needs to know about a vision-language model family.

An adapter answers, for one model instance: where each video's tokens sit and what grid they
form, the M-RoPE positions, how pixels become visual tokens (whole input, or one grid step), and
how to run the language model on given embeddings and positions. Everything else (the memory,
pruning, the streaming session) is written once against this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, InputError, UnsupportedModelError
from . import hf

POSITION_RULES = ("original", "transformers")
"""How M-RoPE positions are numbered: ``"original"`` (the default) the rule the model was trained
with, text after a visual block at one past the largest position the block used; ``"transformers"``
whatever the installed transformers' ``get_rope_index`` does (on transformers 5, text after a
Qwen2-VL / Qwen2.5-VL video starts at the video's first position + max(H, W), see
``docs/upstream/transformers-qwen2-vl-positions.md``)."""


def check_positions(rule) -> str:
    """``rule`` if it is one of :data:`POSITION_RULES`, else one clear error."""
    if rule not in POSITION_RULES:
        raise ConfigError(f"positions must be one of {', '.join(map(repr, POSITION_RULES))}, got {rule!r}.")
    return rule


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
    streaming: type | None = None
    """The family's :class:`~fluxmem.adapters.streaming.StreamOps` (``None``: no streaming session)."""
    own_positions: bool = False
    """Whether the family's original position rule differs from the installed transformers'
    ``get_rope_index`` (then :meth:`rope_positions` numbers ``"original"`` positions itself);
    False: transformers' rule is the original one and both rules are the same numbers."""
    steps_are_independent: bool = True
    """Whether the vision tower encodes each temporal grid step on its own, so that a video may be
    encoded step by step with the same result (checked per family; see streaming.md)."""

    def __init__(self, model) -> None:
        self.model = model
        self.config = model.config

    def stream_ops(self, processor, **options):
        """The streaming strategy for this model and ``processor`` (``min_pixels`` / ``max_pixels``)."""
        if self.streaming is None:
            raise UnsupportedModelError(
                f"the streaming session does not support {self.family} yet; use the offline path, "
                "model.generate(..., use_fluxmem=True)."
            )
        return self.streaming(self, processor, **options)

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

    # ---- the stock forward's steps, before pruning
    def encoder_output(self, kind: str, encoded: dict, pixels, grid_thw):
        """The encoder output for ``kind`` ("image" / "video"): the one ``generate`` already made
        (``mm_encoder_outputs``), else the stock encoder on ``pixels``; ``None`` without either."""
        if encoded.get(kind) is not None:  # generate() encodes pixels before the prefill
            if hf.has_deepstack(self.model) and hf.deepstack(encoded[kind]) is None:
                raise InputError(
                    f"mm_encoder_outputs[{kind!r}] has no deepstack_features, which {self.family} needs; encode "
                    "with the model's get_video_features / get_image_features (or adapter.encode_videos_stepwise)."
                )
            return encoded[kind]
        if pixels is None:
            return None
        return hf.encode(self.model, kind, pixels, grid_thw)

    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        positions: str = "original",
        **_: object,
    ) -> PreparedInputs:
        """Embed text, images and videos exactly as the stock forward and number positions by the
        rule ``positions`` (:data:`POSITION_RULES`; ``position_ids`` given win); the encoder outputs
        stay in ``extras`` for the family's per-token extras (deepstack)."""
        encoded = mm_encoder_outputs or {}
        image_output = self.encoder_output("image", encoded, pixel_values, image_grid_thw)
        video_output = self.encoder_output("video", encoded, pixel_values_videos, video_grid_thw)
        embeds, video = self.place_features(
            input_ids,
            None if image_output is None else hf.pooled(image_output),
            None if video_output is None else hf.pooled(video_output),
        )
        rope_positions, rope_deltas = self.prompt_positions(
            input_ids,
            position_ids,
            mm_token_type_ids,
            rule=positions,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )
        extras = {"input_ids": input_ids, "image_output": image_output, "video_output": video_output}
        return PreparedInputs(embeds, rope_positions, rope_deltas, video, extras=extras)

    def encode_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``[T*H*W, D]`` for pixel patches of one or more videos."""
        return hf.pooled(self.encode_video_output(pixel_values_videos, grid_thw))

    def encode_video_output(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor):
        """The stock encoder output for one or more videos, as ``generate`` puts it in
        ``mm_encoder_outputs["video"]`` (see :func:`hf.encode`)."""
        return hf.encode(self.model, "video", pixel_values_videos, grid_thw)

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
        return hf.join_encoder_outputs(per_video)

    # ---- shared steps of ``prepare``, in the stock forward's own terms
    def place_features(
        self, input_ids: torch.Tensor, image: torch.Tensor | None, video: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings with image and video features placed as the stock forward places them."""
        return hf.place_features(self.model, input_ids, image, video)

    def prompt_positions(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        mm_token_type_ids: torch.Tensor | None,
        *,
        rule: str = "original",
        **rope_inputs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M-RoPE positions [3, B, L], rope deltas)`` by :meth:`rope_positions`; positions the
        caller passed win (their rows are used, the deltas still come from the rule)."""
        positions, deltas = self.rope_positions(input_ids, rule=rule, mm_token_type_ids=mm_token_type_ids, **rope_inputs)
        if position_ids is not None:
            positions = hf.mrope_rows(position_ids)
        return positions, deltas

    def rope_positions(self, input_ids: torch.Tensor, *, rule: str = "original", **rope_inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M-RoPE positions [3, B, L], rope deltas [B, 1])`` of a prompt by ``rule``; the deltas
        are where text continues after it (one past its largest position) minus its length without
        padding. The base family's original rule is transformers' own (``hf.rope_index``)."""
        check_positions(rule)
        return hf.rope_index(self.model, input_ids, **rope_inputs)

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

    def pruned_extras(self, prepared: PreparedInputs, pruned) -> dict:
        """Extra forward arguments derived from the pruning (e.g. pruned deepstack features)."""
        return {}
