"""The one builder of chat messages and processor inputs.

``fluxmem ask``, evaluation, the lmms-eval plugin, training, the pictures and the streaming
session all turn "media + text" into model inputs here, so that every path samples frames with
the family's own patch size (14 px on Qwen2/2.5-VL, 16 px on Qwen3-VL / Qwen3.5) and renders the
prompt with the processor's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


def patch_size(processor) -> int:
    """The vision patch size the processor resizes frames for (the frames must be a multiple of
    ``patch_size * merge_size``). A processor that does not say is an error, not a guess."""
    for part in (getattr(processor, "video_processor", None), getattr(processor, "image_processor", None)):
        size = getattr(part, "patch_size", None)
        if size:
            return int(size)
    raise InputError(
        f"{type(processor).__name__} has no video or image processor with a patch_size; load the model's "
        "processor with transformers.AutoProcessor.from_pretrained(MODEL)."
    )


def token_pixels(processor) -> int:
    """Pixels of one visual token for ``processor``'s family: ``(patch_size * merge_size)²``."""
    parts = (getattr(processor, "video_processor", None), getattr(processor, "image_processor", None))
    merge = next((int(part.merge_size) for part in parts if getattr(part, "merge_size", None)), 2)
    return (patch_size(processor) * merge) ** 2


def check_question(text, about: str = "the video") -> None:
    """A question is a non-empty string; one line naming which it is not."""
    if not isinstance(text, str):
        raise InputError(f"the question must be a string, got {type(text).__name__} {text!r}.")
    if not text.strip():
        raise InputError(f"the question is empty; pass the text to ask about {about}.")


def user_turn(text: str, media: list[dict] | tuple = ()) -> dict:
    """One user message: the media items first (as the published prompts place them), then the text."""
    check_question(text)
    return {"role": "user", "content": [*media, {"type": "text", "text": text}]}


def chat_messages(
    question: str,
    media: list[dict] | tuple = (),
    *,
    system: str | None = None,
    history: list[tuple[str, str]] | tuple = (),
) -> list[dict]:
    """Chat messages for ``question``: an optional system turn, earlier ``(question, answer)`` turns,
    and the media items at the head of the FIRST user turn (the streaming session's layout)."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    turns = [*history, (question, None)]
    for index, (asked, answered) in enumerate(turns):
        messages.append(user_turn(asked, media if index == 0 else ()))
        if answered is not None:
            messages.append({"role": "assistant", "content": answered})
    return messages


def render(processor, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """The prompt text of ``messages`` through the processor's chat template."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


@dataclass
class VisionInputs:
    """Decoded media of a conversation, ready for the processor (reusable across prompts)."""

    images: list | None
    videos: list | None
    video_kwargs: dict


def decode_media(processor, messages: list[dict], *, progress: bool = False) -> VisionInputs:
    """Decode and sample every image and video of ``messages`` for ``processor``'s family
    (:func:`fluxmem.video.process_vision_info` with the family's patch size)."""
    from tqdm.auto import tqdm

    from .video import decode_progress, process_vision_info

    size = patch_size(processor)
    with tqdm(desc="decoding", unit="frame", disable=not progress) as bar:

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        with decode_progress(report):
            images, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True, image_patch_size=size)
    return VisionInputs(images, videos, dict(video_kwargs or {}))


def processor_inputs(
    processor,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    media: VisionInputs | None = None,
    second_per_grid_ts: list[float] | None = None,
    progress: bool = False,
):
    """Processor inputs (a ``BatchFeature`` of one sample) for chat ``messages``. ``media`` reuses
    media decoded earlier by :func:`decode_media`. ``second_per_grid_ts`` replaces the temporal
    spacing the processor derived from the true frame times, one value per video (a benchmark
    protocol that prescribes another spacing; families that write timestamps as text refuse it)."""
    import torch

    text = render(processor, messages, add_generation_prompt=add_generation_prompt)
    media = media or decode_media(processor, messages, progress=progress)
    inputs = processor(
        text=[text], images=media.images, videos=media.videos, padding=True, return_tensors="pt", **media.video_kwargs
    )
    if second_per_grid_ts is not None:
        if "second_per_grid_ts" not in inputs:
            raise InputError(
                f"{type(processor).__name__} gives no second_per_grid_ts (its family writes frame times as text); "
                "a prescribed temporal spacing applies to Qwen2-VL / Qwen2.5-VL processors only."
            )
        if len(second_per_grid_ts) != len(inputs["second_per_grid_ts"]):
            raise InputError(
                f"second_per_grid_ts has {len(second_per_grid_ts)} values for {len(inputs['second_per_grid_ts'])} videos."
            )
        inputs["second_per_grid_ts"] = torch.tensor(second_per_grid_ts, dtype=inputs["second_per_grid_ts"].dtype)
    return inputs
