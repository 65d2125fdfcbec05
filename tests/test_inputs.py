"""The one input builder (fluxmem.inputs): chat layout, the family's patch size, processor inputs."""

import pytest

from fluxmem.errors import InputError
from fluxmem.inference import SamplingOptions, build_messages
from fluxmem.inputs import chat_messages, decode_media, patch_size, processor_inputs, render
from fluxmem.testing import build_processor
from fluxmem.testing_families import FAMILIES, build_family_processor

VIDEO = {"type": "video", "video": "clip.mp4", "fps": 1.0}


def _processor(family):
    return build_processor() if family == "qwen2_5_vl" else build_family_processor(family)


def test_chat_messages_put_media_at_the_head_of_the_first_user_turn():
    messages = chat_messages("Q2", [VIDEO], system="S", history=[("Q1", "A1")])
    assert messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [VIDEO, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
    ]
    assert chat_messages("Q", []) == [{"role": "user", "content": [{"type": "text", "text": "Q"}]}]


@pytest.mark.parametrize("question", ["", "   "])
def test_an_empty_question_is_one_clear_error(question):
    with pytest.raises(InputError, match="the question is empty"):
        chat_messages(question, [VIDEO])


@pytest.mark.parametrize("question", [None, 123, ["What?"]])
def test_a_question_that_is_not_text_is_named_as_such_not_as_empty(question):
    with pytest.raises(InputError, match=f"^the question must be a string, got {type(question).__name__} "):
        chat_messages(question, [VIDEO])


def test_the_prompt_is_the_chat_template_with_the_video_before_the_text():
    text = render(build_processor(), chat_messages("What moves?", [VIDEO]))
    assert text.endswith("<|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n<|im_start|>assistant\n")


def test_a_processor_without_a_patch_size_is_refused_with_the_fix():
    class TextOnly:
        tokenizer = None

    with pytest.raises(InputError, match="AutoProcessor.from_pretrained"):
        patch_size(TextOnly())


@pytest.mark.parametrize("family", ("qwen2_5_vl", *FAMILIES))
def test_every_family_gets_frames_sized_for_its_own_patch(family, square_clip):
    """The frames are resized to a multiple of the family's patch x merge size, so the processor
    cuts them into whole patches (a 16-px processor fed 28-px frames fails with a reshape error)."""
    processor = _processor(family)
    messages = build_messages(square_clip, "What moves?", SamplingOptions(fps=2.0, max_frames=8))
    media = decode_media(processor, messages)
    inputs = processor_inputs(processor, messages, media=media)
    patch = patch_size(processor)
    merge = processor.video_processor.merge_size
    (frames,) = media.videos
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert (h * patch, w * patch) == tuple(frames.shape[-2:])
    assert frames.shape[-1] % (patch * merge) == 0 and frames.shape[-2] % (patch * merge) == 0
    video_tokens = int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")).sum())
    assert video_tokens == t * h * w // merge**2


def test_a_prescribed_temporal_spacing_replaces_the_true_one(square_clip):
    processor = build_processor()
    messages = build_messages(square_clip, "What moves?", SamplingOptions(fps=2.0, max_frames=8))
    default = processor_inputs(processor, messages)
    stretched = processor_inputs(processor, messages, second_per_grid_ts=[2.5])
    # 8 of 16 frames at 2 fps, spread evenly: 15/14 s apart, two frames per grid step
    assert default["second_per_grid_ts"].tolist() == pytest.approx([15 / 7])  # a float32 tensor: 15/7 rounded to float32
    assert stretched["second_per_grid_ts"].tolist() == [2.5]
    assert stretched["input_ids"].tolist() == default["input_ids"].tolist()


def test_a_prescribed_spacing_is_refused_where_the_family_writes_times_as_text(square_clip):
    processor = build_family_processor("qwen3_vl")
    messages = build_messages(square_clip, "What moves?", SamplingOptions(fps=2.0, max_frames=8))
    with pytest.raises(InputError, match="writes frame times as text"):
        processor_inputs(processor, messages, second_per_grid_ts=[2.5])
    with pytest.raises(InputError, match="2 values for 1 videos"):
        processor_inputs(build_processor(), messages, second_per_grid_ts=[2.5, 2.5])
