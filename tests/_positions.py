"""M-RoPE positions of Qwen2-VL / Qwen2.5-VL prompts by the original rule, written out by hand.

The definition, token by token: text counts on by one; an image or video of merged grid
``(T, H, W)`` whose first token sits at position ``s`` numbers its token ``(t, h, w)``
``(s + floor(t * f), s + h, s + w)``, with ``f`` the video's seconds per grid step times
``tokens_per_second`` on Qwen2.5-VL (1 on Qwen2-VL and for images); the text after it continues at
one past the largest position the block used. Padding (``attention_mask`` 0) is skipped. Kept
independent of ``fluxmem.adapters`` on purpose: the tests compare the library with it.
"""

from __future__ import annotations

import math

import torch


def original_positions(config, inputs) -> tuple[list[list[list[int]]], list[int]]:
    """Per sample, the positions ``[[t, h, w], ...]`` of its tokens (padding left out) and one past
    the largest (where decoding continues)."""
    ids = inputs["input_ids"].tolist()
    mask = inputs.get("attention_mask")
    mask = mask.tolist() if mask is not None else [[1] * len(row) for row in ids]
    merge = config.vision_config.spatial_merge_size
    tokens_per_second = getattr(config.vision_config, "tokens_per_second", None)
    seconds = inputs.get("second_per_grid_ts")
    if config.model_type == "qwen2_vl" or tokens_per_second is None:
        seconds = None
    queues = {
        config.image_token_id: [(grid, 1.0) for grid in inputs.get("image_grid_thw", torch.empty(0, 3)).tolist()],
        config.video_token_id: [
            (grid, float(seconds[i]) * tokens_per_second if seconds is not None else 1.0)
            for i, grid in enumerate(inputs.get("video_grid_thw", torch.empty(0, 3)).tolist())
        ],
    }
    samples, nexts = [], []
    for row, row_mask in zip(ids, mask):
        tokens = [token for token, keep in zip(row, row_mask) if keep]
        out, position, i = [], 0, 0
        while i < len(tokens):
            if tokens[i] in queues:
                (t, h, w), factor = queues[tokens[i]].pop(0)
                block = []
                for step in range(t):
                    for y in range(h // merge):
                        for x in range(w // merge):
                            block.append([position + math.floor(step * factor), position + y, position + x])
                out += block
                position = max(max(p) for p in block) + 1
                i += len(block)
            else:
                out.append([position] * 3)
                position += 1
                i += 1
        samples.append(out)
        nexts.append(position)
    assert all(not queue for queue in queues.values()), "grids left over: the prompt holds fewer visual blocks"
    return samples, nexts


def as_tensor(positions: list[list[int]]) -> torch.Tensor:
    """``[3, L]`` from ``[[t, h, w], ...]``."""
    return torch.tensor(positions, dtype=torch.long).T
