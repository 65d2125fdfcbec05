"""The lmms-eval chat model ``fluxmem_qwen2_5_vl``: a Qwen-VL model with the FluxMem switch.

lmms-eval creates it from ``--model_args`` (``create_from_arg_string``), puts each task's dataset
in ``task_dict``, shards the requests itself by ``rank``/``world_size`` (taken from accelerate, so
``accelerate launch -m lmms_eval ...`` runs one process per GPU), and calls
:meth:`FluxMemQwen2_5_VL.generate_until` with chat requests whose ``args`` are
``(ctx, doc_to_messages, gen_kwargs, doc_id, task, split)``.

Each request goes through the same path as ``fluxmem ask``: :func:`fluxmem.loading.load_model`,
:func:`fluxmem.inputs.processor_inputs` with :class:`fluxmem.inference.SamplingOptions`,
:func:`fluxmem.inference.encode_videos` and ``model.generate`` with the switch on (or off with
``use_fluxmem=False`` for the baseline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from ...adapters import get_state
from ...errors import ConfigError, FluxMemError
from ...inference import SamplingOptions, encode_videos
from ...inputs import VisionInputs, decode_media, processor_inputs
from ...memory import FluxMemConfig
from . import MODEL_NAME
from . import messages as _messages

logger = logging.getLogger(__name__)


class UnsupportedRequestError(FluxMemError, NotImplementedError):
    """lmms-eval asked for a request type this model does not answer."""


@dataclass
class _VisionCache:
    """The decoded and encoded videos of the previous request, reused when the next request shows
    the same videos with the same options (benchmarks ask several questions per video)."""

    key: tuple | None = None
    media: VisionInputs | None = None
    encoded: dict | None = None


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{name} must be True or False, got {value!r}.")


def _vision_key(qwen_messages: list[dict]) -> tuple | None:
    """A hashable description of the request's images and videos, or None when one of them is not
    a file path (frames in memory are not cached)."""
    key = []
    for message in qwen_messages:
        content = message["content"]
        if isinstance(content, str):
            continue
        for item in content:
            if item["type"] == "text":
                continue
            source = item.get("video", item.get("image"))
            if not isinstance(source, str):
                return None
            key.append(tuple(sorted((k, v) for k, v in item.items() if isinstance(v, (str, int, float, bool)))))
    return tuple(key) if key else None


class FluxMemQwen2_5_VL(lmms):
    """Qwen-VL (2, 2.5, 3, 3.5 families) with FluxMem, as an lmms-eval chat model.

    Model arguments (``--model_args key=value,...``); the defaults are the settings of the
    published offline results:

    * ``pretrained``: a Hugging Face id or a local directory (required).
    * ``short_frames=8``, ``medium_frames=512``: the memory's tiers in raw frames.
    * ``use_fluxmem=True``: ``False`` runs the unpruned baseline through the same code.
    * ``fps=1``, ``max_frames=1024``, ``min_frames``, ``max_pixels=128*28*28`` (products such as
      ``128*28*28`` are accepted), ``min_pixels``, ``total_pixels``: video sampling, as ``fluxmem ask``.
    * ``device=auto`` (a GPU when present; one GPU per process under ``accelerate launch``),
      ``dtype=auto``, ``attn_implementation`` (``sdpa``, ``flash_attention_2``, ``eager``).
    * ``batch_size=1`` (requests are answered one at a time), ``max_new_tokens=128`` (used when the
      task gives none), ``system_prompt``, ``cache_videos=True`` (reuse the decoded and encoded
      videos of the previous request when the next one shows the same videos), ``strict=False``
      (a request whose video cannot be read is answered with an empty reply, logged and counted;
      ``True`` stops the run instead).
    """

    is_simple = False

    def __init__(
        self,
        pretrained: str | None = None,
        short_frames: int = _messages.PUBLISHED_SHORT_FRAMES,
        medium_frames: int = _messages.PUBLISHED_MEDIUM_FRAMES,
        use_fluxmem: bool = True,
        fps: float = _messages.PUBLISHED_FPS,
        max_frames: int | str | None = _messages.PUBLISHED_MAX_FRAMES,
        min_frames: int | str | None = None,
        max_pixels: int | str | None = _messages.PUBLISHED_MAX_PIXELS,
        min_pixels: int | str | None = None,
        total_pixels: int | str | None = None,
        device: str | None = "auto",
        dtype: str = "auto",
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = _messages.DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        cache_videos: bool = True,
        strict: bool = False,
        positions: str = "original",
        **unused,
    ) -> None:
        super().__init__()
        unused = {k: v for k, v in unused.items() if v is not None and k != "max_batch_size"}
        if unused:
            raise ConfigError(
                f"unknown model argument(s) for {MODEL_NAME}: {', '.join(sorted(unused))}. "
                "See `fluxmem.eval.lmms.FluxMemQwen2_5_VL` or docs/lmms-eval.md for the list."
            )
        if not pretrained:
            raise ConfigError(f"{MODEL_NAME} needs pretrained=<Hugging Face id or local model directory>.")
        requested_batch = _messages.parse_count("batch_size", batch_size)
        if requested_batch not in (None, 1):
            raise ConfigError(
                f"batch_size={requested_batch} is not supported: {MODEL_NAME} answers one request at a time. "
                "Use batch_size=1 and several processes (accelerate launch) to go faster."
            )
        self.batch_size_per_gpu = 1
        self.memory_config = FluxMemConfig(
            short_frames=_messages.parse_count("short_frames", short_frames),
            medium_frames=_messages.parse_count("medium_frames", medium_frames),
        )
        self.memory_config.grid_steps()  # short_frames below one grid step fails here, not mid-run
        self.use_fluxmem = _bool("use_fluxmem", use_fluxmem)
        if positions not in ("original", "transformers"):
            raise ConfigError(f"positions must be original or transformers, got {positions!r}.")
        self.positions = positions
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise ConfigError(f"fps must be a number of frames per second, got {fps!r}.") from None
        self.sampling = SamplingOptions(
            fps=fps,
            max_frames=_messages.parse_count("max_frames", max_frames),
            min_frames=_messages.parse_count("min_frames", min_frames),
            max_pixels=_messages.parse_count("max_pixels", max_pixels),
            min_pixels=_messages.parse_count("min_pixels", min_pixels),
            total_pixels=_messages.parse_count("total_pixels", total_pixels),
        )
        self.default_max_new_tokens = _messages.parse_count("max_new_tokens", max_new_tokens) or _messages.DEFAULT_MAX_NEW_TOKENS
        self.system_prompt = self._resolve_system_prompt(system_prompt) if system_prompt else None
        self.cache_videos = _bool("cache_videos", cache_videos)
        self.strict = _bool("strict", strict)
        self._cache = _VisionCache()
        self.video_cache_hits = 0
        self.failures: list[dict] = []
        self.memory_totals = {"requests": 0, "tokens": 0, "kept": 0}

        from accelerate import Accelerator

        from ...loading import load_model, resolve_device

        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        device = resolve_device(device or "auto")
        if self._world_size > 1 and device.startswith("cuda"):
            device = f"cuda:{self.accelerator.local_process_index}"  # one GPU per process
        self.model, self.processor = load_model(
            pretrained,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            fluxmem=self.memory_config,
            use_fluxmem=self.use_fluxmem,
            positions=positions,
        )
        self._device = self.model.device

    # -- what lmms-eval reads from a model ---------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def eot_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    # -- requests ----------------------------------------------------------------------------

    def loglikelihood(self, requests):
        raise UnsupportedRequestError(
            f"{MODEL_NAME} does not compute log-likelihoods; run generation tasks (output_type: "
            "generate_until) such as videomme, mlvu_dev or longvideobench_val_v."
        )

    def generate_until_multi_round(self, requests):
        raise UnsupportedRequestError(
            f"{MODEL_NAME} does not run multi-round tasks (generate_until_multi_round); run single-turn "
            "generation tasks such as videomme, mlvu_dev or longvideobench_val_v."
        )

    def generate_until(self, requests) -> list[GenerationResult]:
        """One reply per request, in the order given."""
        results = []
        for request in tqdm(requests, desc=f"{MODEL_NAME} answering", unit="q", disable=self.rank != 0):
            ctx, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
            options, stops = _messages.generation_options(gen_kwargs, self.default_max_new_tokens)
            try:
                raw = doc_to_messages(self.task_dict[task][split][doc_id]) if callable(doc_to_messages) else doc_to_messages
                conversation = _messages.to_qwen_messages(raw, self.sampling, system_prompt=self.system_prompt)
                text, counts = self.reply(conversation, options)
            except FluxMemError as error:
                if self.strict:
                    raise
                logger.warning("%s: %s doc %s answered with an empty reply: %s", MODEL_NAME, task, doc_id, error)
                self.failures.append({"task": task, "split": split, "doc_id": doc_id, "error": str(error)})
                text, counts = "", TokenCounts()
            text = _messages.cut_at_stop(text, stops)
            results.append(GenerationResult(text=text, token_counts=counts))
            self.cache_hook.add_partial("generate_until", (ctx, gen_kwargs), text)
        self._log_summary()
        return results

    def reply(self, conversation: list[dict], options: dict) -> tuple[str, TokenCounts]:
        """Generate the reply to Qwen chat ``conversation`` with ``generate`` ``options``.

        Videos are decoded and encoded once per distinct set of videos when ``cache_videos``.
        ``input_tokens`` counts the prompt tokens the language model processed (after pruning).
        """
        key = _vision_key(conversation) if self.cache_videos else None
        cached = key is not None and key == self._cache.key
        if cached:
            media = self._cache.media
            self.video_cache_hits += 1
        else:
            media = decode_media(self.processor, conversation)
        inputs = processor_inputs(self.processor, conversation, media=media)
        encoded = self._cache.encoded if cached else encode_videos(self.model, inputs)
        if not cached:
            self._cache = _VisionCache(key, media, encoded) if key is not None else _VisionCache()
        model_inputs = {k: v for k, v in inputs.items() if not (encoded is not None and k == "pixel_values_videos")}
        model_inputs = {k: (v.to(self.model.device) if hasattr(v, "to") else v) for k, v in model_inputs.items()}
        if encoded is not None:
            model_inputs["mm_encoder_outputs"] = encoded
        state = get_state(self.model)
        if state is not None:
            state.last_reports = []
        with torch.inference_mode():
            output = self.model.generate(**model_inputs, use_fluxmem=self.use_fluxmem, **options)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = output[0, prompt_length:].tolist()
        reply = self.processor.batch_decode([new_tokens], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        dropped = self._count_memory(state)
        return reply, TokenCounts(input_tokens=prompt_length - dropped, output_tokens=len(new_tokens))

    def _count_memory(self, state) -> int:
        """Add the last prefill's visual tokens to the totals; the number FluxMem dropped."""
        self.memory_totals["requests"] += 1
        if state is None or not self.use_fluxmem or not state.last_reports:
            return 0
        summary = state.summary()
        self.memory_totals["tokens"] += summary["tokens"]
        self.memory_totals["kept"] += summary["kept"]
        return summary["tokens"] - summary["kept"]

    def _log_summary(self) -> None:
        totals = self.memory_totals
        if self.use_fluxmem and totals["tokens"]:
            logger.warning(
                "%s: FluxMem kept %d of %d visual tokens (%.1f%%) over %d requests (short_frames=%d, medium_frames=%d).",
                MODEL_NAME, totals["kept"], totals["tokens"], 100 * totals["kept"] / totals["tokens"],
                totals["requests"], self.memory_config.short_frames, self.memory_config.medium_frames,
            )
        if self.failures:
            logger.warning(
                "%s: %d request(s) got an empty reply because their input could not be read (first: %s).",
                MODEL_NAME, len(self.failures), self.failures[0]["error"],
            )
