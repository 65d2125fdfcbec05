"""``fluxmem quickstart``: the main job on the sample clip shipped with fluxmem, memory on.

Asks the default model (``Qwen/Qwen2.5-VL-7B-Instruct``; its weights, about 16 GB, download on
the first run) what moves in a 20-second clip. Where the weights cannot be fetched (no network,
no access to the Hugging Face Hub, ``HF_HUB_OFFLINE=1``) it says so in one line and runs the same
job on the offline tiny model of ``fluxmem.testing`` instead (random weights: its answer is noise,
the memory's figures are real). ``--offline`` goes to the tiny model straight away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from . import options

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
TINY_MODEL = "the offline tiny Qwen2.5-VL of fluxmem.testing"
TINY_ANSWER = "({count} tokens of noise: the tiny model's weights are random; a real model answers here)"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="answer a question about the bundled sample clip (no files needed)", description=__doc__
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hugging Face id or local directory (default %(default)s)")
    parser.add_argument("--offline", action="store_true", help="use the offline tiny model without trying the Hub")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    parser.add_argument("--max-new-tokens", type=options.positive_int, default=64)
    parser.set_defaults(handler=run, attn_implementation=None)


def run(args: argparse.Namespace) -> int:
    from ..inference import SamplingOptions, answer
    from ..memory import FluxMemConfig
    from ..video import probe_video
    from ..video.sample import SAMPLE_QUESTION, sample_clip
    from .ask import format_memory_line

    options.check_model_options(args)
    memory = FluxMemConfig()  # the defaults, as `fluxmem ask`
    model = None
    reason = None if args.offline else fetch_problem(args.model)
    if not args.offline and reason is None:
        from ..loading import load_model

        local = Path(args.model).expanduser().exists()
        hint = "" if local else " (downloaded on first use; --offline runs the tiny model instead)"
        print(f"fluxmem quickstart: loading {args.model}{hint}", file=sys.stderr)
        try:
            model, processor = load_model(args.model, device=args.device, dtype=args.dtype, fluxmem=memory)
        except OSError as error:  # the download broke off (network, disk): say so, then show the job anyway
            if local:
                raise
            reason = f"the download failed: {_first_line(error)}"
    if model is None:
        if reason is not None:
            print(f"fluxmem quickstart: cannot fetch {args.model} ({reason}); running the same job on {TINY_MODEL} "
                  "(random weights: its answer is noise).", file=sys.stderr)
        model, processor = tiny_model(memory)
    tiny = reason is not None or args.offline
    with sample_clip() as clip:
        info = probe_video(str(clip))
        result = answer(model, processor, clip, SAMPLE_QUESTION, sampling=SamplingOptions(fps=1.0),
                        max_new_tokens=args.max_new_tokens)
    print(f"clip:     {Path(clip).name}, {info.duration:.0f} s, {info.width}x{info.height}, shipped with fluxmem")
    print(f"question: {SAMPLE_QUESTION}")
    print(f"model:    {TINY_MODEL if tiny else args.model}, FluxMem on")
    print(f"answer:   {TINY_ANSWER.format(count=len(result.token_ids)) if tiny else result.text.strip()}")
    print(format_memory_line(result.memory, result.timings_ms, enabled=True))
    return 0


def fetch_problem(model: str) -> str | None:
    """Why the weights of ``model`` cannot be fetched here, or None when they can (a local
    directory, a Hub id already in the local cache, or a Hub id whose files the Hub serves)."""
    import huggingface_hub
    from huggingface_hub import errors

    if Path(model).expanduser().exists():
        return None
    try:
        cached = huggingface_hub.try_to_load_from_cache(model, "config.json")  # a path, or a sentinel / None
    except errors.HFValidationError:
        raise ConfigError(f"--model {model!r} is neither a local directory nor a Hugging Face id; pass a saved "
                          f"model directory or a Hub id such as {DEFAULT_MODEL}.") from None
    if isinstance(cached, str):
        return None
    try:  # one request, no retries: a machine without network answers at once
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(model, "config.json"), timeout=10)
    except errors.OfflineModeIsEnabled:
        return "HF_HUB_OFFLINE is set and the model is not in the local cache"
    except errors.GatedRepoError:
        return "the model is gated: accept its terms on huggingface.co, then log in with `hf auth login`"
    except errors.RepositoryNotFoundError:
        if model != DEFAULT_MODEL:
            raise ConfigError(f"--model {model!r} is neither a local directory nor a model on the Hugging Face "
                              f"Hub; pass a saved model directory or a Hub id such as {DEFAULT_MODEL}.") from None
        return "the Hugging Face Hub does not serve it to this machine"
    except errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        return f"the Hugging Face Hub answered HTTP {status}"
    except Exception as error:  # noqa: BLE001 - connection refused, DNS, TLS, timeout: all mean "no network"
        return f"the Hugging Face Hub is unreachable: {_first_line(error)}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def tiny_model(memory):
    """The offline tiny Qwen2.5-VL (random weights, built in memory) with the switch on."""
    from ..adapters import install
    from ..testing import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl()
    install(model, memory, default_active=True)
    return model, processor
