"""lmms-eval chat requests -> Qwen chat messages and ``generate`` options (no lmms-eval import).

lmms-eval's chat tasks hand a model ``doc_to_messages(doc)``: a list of
``{"role": ..., "content": [{"type": "text", "text": ...}, {"type": "video", "url": ...,
"start_time": ..., "end_time": ...}, {"type": "image", "url": ...}]}`` (or the same as pydantic
``ChatMessage`` objects). The video ``url`` is a path, a list of frames, or - when a task attaches a
time range - a dict ``{"path"|"url"|"video": ..., "video_start": s, "video_end": s}``. We turn that
into the content items that :func:`fluxmem.video.process_vision_info` reads, with our sampling
options on every video, so that the run samples exactly as ``fluxmem ask`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ...errors import ConfigError, InputError
from ...inference import SamplingOptions

#: The settings of the published offline results (VideoMME, MLVU, LongVideoBench).
PUBLISHED_SHORT_FRAMES = 8
PUBLISHED_MEDIUM_FRAMES = 512
PUBLISHED_FPS = 1.0
PUBLISHED_MAX_FRAMES = 1024
PUBLISHED_MAX_PIXELS = 128 * 28 * 28

DEFAULT_MAX_NEW_TOKENS = 128

_ROLES = ("system", "user", "assistant")
_PRODUCT = re.compile(r"^\s*\d+(\s*\*\s*\d+)*\s*$")


def parse_count(name: str, value) -> int | None:
    """An integer model argument; accepts ``"128*28*28"`` as written in the recipes (lmms-eval passes
    model arguments as strings when they are not plain numbers)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _PRODUCT.match(value):
        result = 1
        for factor in value.split("*"):
            result *= int(factor)
        return result
    raise ConfigError(f"{name} must be a whole number such as 100352 or 128*28*28, got {value!r}.")


def _plain(obj):
    """A pydantic message/content object as a plain dict; anything else unchanged."""
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


def _video_item(url, start, end, sampling: SamplingOptions) -> dict:
    if isinstance(url, Mapping):
        source = next((url[k] for k in ("video", "path", "url") if url.get(k) is not None), None)
        if source is None:
            raise InputError(f"a video part carries a dict without a 'path', 'url' or 'video' key: {dict(url)}.")
        start = url.get("video_start", start)
        end = url.get("video_end", end)
        url = source
    if url is None or (isinstance(url, str) and not url.strip()):
        raise InputError("a video part of the request has no video; the task's doc_to_visual returned nothing.")
    item = sampling.video_item("")
    item["video"] = str(url) if hasattr(url, "__fspath__") else url  # paths, frame lists and arrays as given
    if start is not None:
        item["video_start"] = float(start)
    if end is not None:
        item["video_end"] = float(end)
    return item


def to_qwen_messages(
    messages,
    sampling: SamplingOptions,
    *,
    system_prompt: str | None = None,
) -> list[dict]:
    """Qwen chat messages for an lmms-eval ``doc_to_messages`` result.

    Text, image and video parts keep their order; every video gets ``sampling``'s options (a
    part's ``start_time``/``end_time`` become ``video_start``/``video_end``). A system message
    made only of text becomes a plain string (the Qwen template's system form); ``system_prompt``
    is added as the system message when the request has none. Audio parts raise
    :class:`InputError` (the Qwen-VL models we load have no audio input).
    """
    messages = _plain(messages)
    if isinstance(messages, Mapping) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InputError(f"doc_to_messages must return a non-empty list of chat messages, got {type(messages).__name__}.")
    converted = []
    for position, message in enumerate(messages):
        message = _plain(message)
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            raise InputError(
                f"chat message {position} must be a dict with a role among {_ROLES}, got {message!r:.200}."
            )
        role, content = message["role"], message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, Sequence):
            parts = [_plain(part) for part in content]
        else:
            raise InputError(f"chat message {position} has content of type {type(content).__name__}; give text or a list of parts.")
        items = []
        for part in parts:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                items.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image":
                image = part.get("url", part.get("image"))
                if image is None:
                    raise InputError(f"an image part of chat message {position} has no image.")
                items.append({"type": "image", "image": image})
            elif kind == "video":
                url = part.get("url", part.get("video"))
                items.append(_video_item(url, part.get("start_time"), part.get("end_time"), sampling))
            elif kind == "audio":
                raise InputError(
                    "the request has an audio part; the Qwen-VL models fluxmem loads take no audio. "
                    "Run a vision-only task (videomme, mlvu_dev, longvideobench_val_v)."
                )
            else:
                raise InputError(f"chat message {position} has a part of unknown type {kind!r}; expected text, image or video.")
        if role == "system" and all(item["type"] == "text" for item in items):
            converted.append({"role": "system", "content": "\n".join(item["text"] for item in items)})
        else:
            converted.append({"role": role, "content": items})
    if system_prompt and converted[0]["role"] != "system":
        converted.insert(0, {"role": "system", "content": system_prompt})
    return converted


def generation_options(gen_kwargs: Mapping | None, default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[dict, list[str]]:
    """``(generate keyword arguments, stop strings)`` for an lmms-eval ``gen_kwargs`` dict.

    ``temperature`` 0 or absent means greedy decoding (``do_sample=False``, as ``fluxmem ask``);
    a positive temperature samples with it (and ``top_p``/``top_k`` when given). ``num_beams`` > 1
    is passed on. ``until`` (a string or a list) is returned as the stop strings that
    :func:`cut_at_stop` applies to the decoded reply. Other keys are ignored.
    """
    gen_kwargs = dict(gen_kwargs or {})
    max_new_tokens = parse_count("max_new_tokens", gen_kwargs.get("max_new_tokens", default_max_new_tokens))
    if max_new_tokens is None or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {gen_kwargs.get('max_new_tokens')!r}.")
    options: dict = {"max_new_tokens": max_new_tokens}
    temperature = gen_kwargs.get("temperature")
    temperature = 0.0 if temperature is None else float(temperature)
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}.")
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature)
        for key in ("top_p", "top_k"):
            if gen_kwargs.get(key) is not None:
                options[key] = gen_kwargs[key]
    else:
        options["do_sample"] = False
    num_beams = gen_kwargs.get("num_beams")
    if num_beams is not None and int(num_beams) > 1:
        options["num_beams"] = int(num_beams)
    until = gen_kwargs.get("until")
    if until is None:
        stops = []
    elif isinstance(until, str):
        stops = [until]
    elif isinstance(until, Sequence):
        stops = [str(s) for s in until]
    else:
        raise ConfigError(f"'until' must be a string or a list of strings, got {until!r}.")
    return options, [s for s in stops if s]


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string it contains."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if 0 <= at < cut:
            cut = at
    return text[:cut]
