"""Qwen2.5-VL (``transformers.Qwen2_5_VLForConditionalGeneration``).

Reuses the official model's own methods for every step, so that the embeddings that fluxmem prunes
are bit-for-bit those the stock forward would have used: ``get_video_features`` /
``get_image_features`` (vision tower and merger), ``get_placeholder_mask`` with ``masked_scatter``
(placement).

Positions: the original rule by default (:meth:`Qwen2_5_VLAdapter.original_positions`), which
transformers 5's ``get_rope_index`` no longer follows after a video; ``positions="transformers"``
calls ``get_rope_index`` (``docs/models.md``).

The vision tower attends only within one temporal grid step (full-attention blocks use per-step
sequence boundaries, window attention is spatial), so a video can be encoded step by step with
the same result; ``tests/test_session.py`` checks it.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from . import hf
from .base import ModelAdapter, check_positions
from .streaming import Qwen2_5_VLStreamOps


class Qwen2_5_VLAdapter(ModelAdapter):
    family = "Qwen2.5-VL"
    streaming = Qwen2_5_VLStreamOps
    own_positions = True

    def rope_positions(self, input_ids, *, rule="original", **rope_inputs):
        if check_positions(rule) == "transformers":
            return hf.rope_index(self.model, input_ids, **rope_inputs)
        return self.original_positions(input_ids, **rope_inputs)

    def temporal_interval(self, seconds_per_step: torch.Tensor | None):
        """How far the temporal position moves per grid step of a video: ``tokens_per_second`` x
        the step's seconds (1 s when the processor gave none), in float32 as the model computes it."""
        tokens_per_second = self.vision_config.tokens_per_second
        return tokens_per_second * (seconds_per_step if seconds_per_step is not None else 1)

    def original_positions(self, input_ids: torch.Tensor, *, mm_token_type_ids=None, image_grid_thw=None,
                           video_grid_thw=None, second_per_grid_ts=None, attention_mask=None):  # fmt: skip
        """The positions Qwen2-VL and Qwen2.5-VL were trained with, per sample (padding left out):
        text counts on by one; an image or video of merged grid ``(T, H, W)`` starting at position
        ``s`` numbers its token ``(t, h, w)`` ``(s + floor(t * interval), s + h, s + w)``, and the
        text after it continues at one past the largest position the block used (its temporal
        extent included). Decoding continues at one past the prompt's largest position."""
        types = hf.modality_types(self.model, input_ids) if mm_token_type_ids is None else mm_token_type_ids
        grids = {1: _rows(image_grid_thw), 2: _rows(video_grid_thw)}
        used = {1: 0, 2: 0}
        seconds = None if second_per_grid_ts is None else torch.as_tensor(second_per_grid_ts).reshape(-1)
        positions = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
        deltas = []
        for sample in range(input_ids.shape[0]):
            valid = torch.ones_like(input_ids[sample], dtype=torch.bool) if attention_mask is None else attention_mask[sample].bool()
            kinds = types[sample][valid].tolist()
            parts, next_position, index = [], 0, 0
            while index < len(kinds):
                kind = kinds[index]
                if kind == 0:
                    end = index
                    while end < len(kinds) and kinds[end] == 0:
                        end += 1
                    parts.append(torch.arange(next_position, next_position + end - index).expand(3, -1))
                    next_position += end - index
                    index = end
                    continue
                row = used[kind]
                if row >= len(grids[kind]):
                    raise InputError(f"the prompt holds more {_NAMES[kind]} tokens than {_NAMES[kind]}_grid_thw describes; "
                                     "build the inputs with the model's processor.")  # fmt: skip
                used[kind] += 1
                interval = self.temporal_interval(None if seconds is None else seconds[row]) if kind == 2 else 1
                block = self.visual_block_positions(grids[kind][row], interval, next_position)
                if kinds[index : index + block.shape[1]] != [kind] * block.shape[1]:
                    raise InputError(f"{_NAMES[kind]} {row} should have {block.shape[1]} tokens (grid "
                                     f"{grids[kind][row]}); build the inputs with the model's processor.")  # fmt: skip
                parts.append(block)
                next_position = int(block.max()) + 1
                index += block.shape[1]
            numbered = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
            positions[:, sample, valid] = numbered.to(positions)
            deltas.append(next_position - len(kinds))
        for kind, rows in grids.items():
            if used[kind] != len(rows):
                raise InputError(f"{_NAMES[kind]}_grid_thw describes {len(rows)} {_NAMES[kind]}s but the prompt holds "
                                 f"{used[kind]}; build the inputs with the model's processor.")  # fmt: skip
        return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)

    def visual_block_positions(self, grid_thw, interval, start: int) -> torch.Tensor:
        """``[3, T*H*W]`` positions of one image or video of (unmerged) ``grid_thw`` starting at
        ``start``: ``(start + floor(t * interval), start + h, start + w)`` in raster order."""
        t, h, w = self.merged_grid(grid_thw)
        temporal = (torch.arange(t) * interval).long()
        grid = torch.meshgrid(temporal, torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack(grid).reshape(3, -1) + start


_NAMES = {1: "image", 2: "video"}


def _rows(grid_thw) -> list[list[int]]:
    return [] if grid_thw is None else [list(map(int, row)) for row in torch.as_tensor(grid_thw).reshape(-1, 3).tolist()]
