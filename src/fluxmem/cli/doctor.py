"""``fluxmem doctor``: what the installed transformers does that fluxmem relies on.

Prints one line saying where the installed transformers' ``get_rope_index`` puts text after a
Qwen2-VL / Qwen2.5-VL video and where fluxmem puts it (``docs/models.md``, "Positions"): measured
on a prompt with a tiny video, with tiny random models built from ``fluxmem.testing`` (no weights).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="say which M-RoPE position rule transformers and fluxmem use", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(positions_line())
    return 0


def positions_line() -> str:
    """One line: the installed transformers' rule for text after a video and fluxmem's, measured
    on :func:`fluxmem.adapters.hf.text_rule_probe` for Qwen2-VL and Qwen2.5-VL."""
    import torch
    from transformers import AutoModelForImageTextToText

    from ..adapters import hf, registry
    from ..testing import build_tokenizer, tiny_qwen2_5_vl_config
    from ..testing_families import tiny_family_config

    tokenizer = build_tokenizer()
    stock, ours = {}, {}
    for family, config in (("Qwen2-VL", tiny_family_config("qwen2_vl", tokenizer)),
                           ("Qwen2.5-VL", tiny_qwen2_5_vl_config(tokenizer))):  # fmt: skip
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(config).eval()
        stock[family] = hf.text_after_video(model)
        probe = hf.text_rule_probe(model)
        positions, _ = registry.adapter_for(model).rope_positions(probe.pop("input_ids"), **probe)
        ours[family] = hf.text_rule_of(positions)
    return (f"transformers {hf.installed_version()} puts text after a video at {_said(stock)}; fluxmem applies "
            f"{_said(ours)} (positions='original', the default; --positions transformers keeps transformers' rule)")


def _said(rules: dict[str, tuple[str, str]]) -> str:
    """The rule in words with the probe's numbers per family (per family when they disagree)."""
    from ..adapters.hf import TEXT_RULES

    by_rule: dict[str, list[str]] = {}
    for family, (rule, numbers) in rules.items():
        by_rule.setdefault(rule, []).append(f"{family}: {numbers}")
    return "; ".join(f"{TEXT_RULES.get(rule, 'a position neither known rule gives')} ({', '.join(cases)})"
                     for rule, cases in by_rule.items())  # fmt: skip
