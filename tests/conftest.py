"""Shared fixtures: a tiny Qwen2.5-VL built offline, and synthetic clips with a known answer."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test-only helpers such as reference_fluxmem

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL and its processor saved with save_pretrained."""
    from fluxmem.testing import build_tiny_qwen2_5_vl

    path = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    build_tiny_qwen2_5_vl(path)
    return path


@pytest.fixture(scope="session")
def square_clip(tmp_path_factory):
    """A 16-frame clip at 2 fps: static background, square jumping two cells per frame."""
    from fluxmem.testing import moving_square_frames, write_video

    frames = moving_square_frames(16, height=112, width=224, step=56)
    return write_video(tmp_path_factory.mktemp("clips") / "square.mp4", frames, fps=2.0)


def video_tensor(frames):
    """uint8 [T, H, W, 3] numpy -> the [T, 3, H, W] tensor the processor takes."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
