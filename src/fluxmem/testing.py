"""Tiny offline Qwen-VL models, tokenizers and synthetic videos for tests and benchmarks.

Nothing here downloads anything: the model has random weights and a few small layers, the
tokenizer is a byte-level BPE trained in memory on a few sentences, and the videos are drawn
(static background, one moving square) so that the right answer about them is known.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The structure of Qwen2.5-VL's template: a default system turn, then each turn's text, images
# and videos in order, each vision input wrapped in <|vision_start|> ... <|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "You are a helpful assistant. Describe this video. What is moving in the video?",
    "A red square moves from the left to the right over a grey background.",
    "The answer is A. The best option is B. Yes. No. How many times? 1 2 3 4 5 6 7 8 9 0",
    "Question: What color is the square? Options: A. red B. green C. blue D. white",
    "The man puts the cup in the drawer, then walks to the door and opens it.",
]


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer with Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer=None, *, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 64):
    """A ``Qwen2_5_VLProcessor`` around the tiny tokenizer with small pixel budgets."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or build_tokenizer()
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def tiny_qwen2_5_vl_config(tokenizer=None, **text_overrides):
    """A Qwen2.5-VL config with the real structure (window and full attention blocks, M-RoPE,
    2x2 spatial merge, temporal patch 2) at toy sizes."""
    from transformers import Qwen2_5_VLConfig

    tokenizer = tokenizer or build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    text.update(text_overrides)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=text["hidden_size"],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def shaped_qwen2_5_vl_config(tokenizer=None, *, hidden: int, layers: int):
    """A random Qwen2.5-VL config ``hidden`` wide with ``layers`` decoder layers and 64-wide heads
    (as the released models), the vision tower at toy size: the benchmarks' model."""
    return tiny_qwen2_5_vl_config(
        tokenizer,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},  # head_dim 64
    )


def build_tiny_qwen2_5_vl(
    save_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    model_class=None,
    **text_overrides,
):
    """``(model, processor)``: a random tiny Qwen2.5-VL in float32 on the CPU, in eval mode.

    With ``save_dir`` both are written with ``save_pretrained`` so that the real loading code
    (``from_pretrained(path)``) can be exercised.
    """
    if model_class is None:
        from transformers import Qwen2_5_VLForConditionalGeneration as model_class
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = tiny_qwen2_5_vl_config(tokenizer, **text_overrides)
    return instantiate_tiny(model_class, config, processor, seed=seed, attn_implementation=attn_implementation,
                            save_dir=save_dir)


def instantiate_tiny(model_class, config, processor, *, seed: int = 0, attn_implementation: str = "sdpa",
                     save_dir: str | os.PathLike | None = None):
    """``(model, processor)``: ``model_class(config)`` with seeded random weights, float32, eval
    mode; saved with ``save_pretrained`` when ``save_dir`` is given."""
    from .adapters import hf

    hf.set_attention(config, attn_implementation)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Random weights give near-uniform logits; a larger output scale makes greedy decoding decisive,
    # so that comparisons between code paths are not at the mercy of float rounding.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    if save_dir is not None:
        save_dir = Path(save_dir)
        model.save_pretrained(save_dir)
        processor.save_pretrained(save_dir)
    return model, processor


# ---------------------------------------------------------------------------------- videos
def moving_square_frames(
    num_frames: int,
    *,
    height: int = 112,
    width: int = 112,
    square: int = 28,
    step: int = 28,
    background: int = 96,
    seed: int = 0,
) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: a fixed textured background and one red square that moves
    ``step`` pixels to the right per frame, cycling through the positions ``0, step, 2*step, ...``
    that fit; aligned with the 28-pixel cells of Qwen's merged-token grid when ``square`` and
    ``step`` are multiples of 28. A square that moves farther than one cell per temporal grid step
    (``step=56``) is new in every 3x3 neighbourhood, so FluxMem must keep it."""
    rng = np.random.default_rng(seed)
    base = np.full((height, width, 3), background, dtype=np.int16)
    base += rng.integers(-40, 40, size=(height, width, 3), dtype=np.int16)
    base = base.clip(0, 255).astype(np.uint8)
    frames = np.repeat(base[None], num_frames, axis=0)
    top = (height - square) // 2
    top -= top % 28
    lefts = list(range(0, width - square + 1, step)) or [0]
    for t in range(num_frames):
        left = lefts[t % len(lefts)]
        frames[t, top : top + square, left : left + square] = (255, 40, 40)
    return frames


def square_cells(num_frames: int, **kwargs) -> list[set[tuple[int, int]]]:
    """Merged-grid cells (28x28 pixels each) covered by the square in each frame."""
    frames = moving_square_frames(num_frames, **kwargs)
    cells = []
    for frame in frames:
        red = (frame[..., 0] == 255) & (frame[..., 1] == 40)
        ys, xs = np.nonzero(red)
        cells.append({(y // 28, x // 28) for y, x in zip(ys, xs)})
    return cells


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 2.0, codec: str = "mpeg4") -> Path:
    """Encode ``[T, H, W, 3]`` uint8 frames to a video file with PyAV (high quality, so decoded
    frames stay close to the drawn ones)."""
    import av
    from fractions import Fraction

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "1"} if codec == "mpeg4" else {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
