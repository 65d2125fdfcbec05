"""``fluxmem train CONFIG.yaml [--key value ...]``: supervised fine-tuning with FluxMem in the loop.

Every key of the YAML file can be given (or overridden) on the command line as ``--key value``
(``--learning_rate 2e-5``, ``--lora true``, ``--datasets '[a.jsonl, b.jsonl%50]'``). Runs the
same under ``accelerate launch`` / ``torchrun`` on several GPUs; see docs/training.md.
"""

from __future__ import annotations

import argparse
import json

_UNKNOWN = "_train_unknown_args"


def register(subparsers) -> None:
    from ..train.config import field_help

    epilog = "settings (YAML keys, also --key value):\n" + "\n".join(
        f"  {name:<28} default {default}" + (f"  - {doc}" if doc else "") for name, default, doc in field_help()
    )
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a Qwen2.5-VL model with FluxMem in the forward pass",
        description=__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("config", nargs="?", default=None, help="YAML file of settings (optional: all can be options)")
    group = parser.add_argument_group("settings (see the list below)")
    for name, _, doc in field_help():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        group.add_argument(*flags, dest=f"set_{name}", metavar="VALUE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)
    _collect_unknown_options(parser)


def _collect_unknown_options(parser: argparse.ArgumentParser) -> None:
    """Let the handler report unknown options itself (with the closest valid key) instead of
    argparse's bare 'unrecognized arguments'."""
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, extras = original(args, namespace)
        if extras:
            setattr(namespace, _UNKNOWN, extras)
        return namespace, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train import TrainConfig, train
    from ..train.config import parse_overrides, read_value

    unknown = getattr(args, _UNKNOWN, None)
    if unknown:
        parse_overrides(unknown)  # raises naming the closest valid key
        raise ConfigError(f"unexpected arguments: {' '.join(unknown)}")
    overrides = {key[4:]: read_value(value) for key, value in vars(args).items() if key.startswith("set_")}
    config = TrainConfig.from_yaml(args.config, overrides)
    result = train(config)
    summary = {
        "output_dir": result.output_dir,
        "steps": result.global_step,
        "training_loss": round(result.training_loss, 6),
        "skipped_samples": result.skipped,
    }
    if result.merged_dir:
        summary["merged_dir"] = result.merged_dir
    print(json.dumps(summary))
    return 0
