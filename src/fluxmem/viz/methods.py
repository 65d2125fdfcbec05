"""Memory methods side by side on the same frames: one column per method, one row per grid step.

The video is decoded and encoded once; every method (:mod:`fluxmem.memories`) runs on the same
features, at the same token budget. FluxMem's tiles keep their marks (TAS drops hatched, SDC
clusters outlined); a method that only drops tokens shows its dropped cells darkened and hatched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ..errors import InputError
from ..memories import MemoryResult
from ..memories import get as get_method
from .overlay import _swatch_step, draw_step, font
from .records import MemoryTrace, encode_for_pictures, trace_from_records

MAX_ROWS = 12


@dataclass
class MethodTrace:
    """One method's decisions on the video: its spec (knob solved), result and trace."""

    method: str
    result: MemoryResult
    trace: MemoryTrace


def trace_methods(model, processor, video, methods, *, budget=None, sampling=None, display: str = "blend",
                  progress: bool = False) -> list[MethodTrace]:
    """Encode ``video`` once and run every method of ``methods`` (specs or :class:`Memory`) on it."""
    adapter, clip, features, grid, frames = encode_for_pictures(model, processor, video, sampling, progress=progress)
    source = str(video) if isinstance(video, (str, os.PathLike)) else None
    traces = []
    for spec in methods:
        method = get_method(spec)
        result = method.compress(features, grid, temporal_patch_size=adapter.temporal_patch_size, budget=budget)
        trace = trace_from_records(result.frames, frames, grid[1:], config=None,
                                   temporal_patch_size=adapter.temporal_patch_size, timestamps=clip.timestamps,
                                   sample_fps=clip.sample_fps, source=source, display=display)
        if not result.tiered:  # a method that only drops: its dropped cells drawn as dropped
            for step in trace.steps:
                step.tas_dropped = ~step.keep
        traces.append(MethodTrace(method=result.method, result=result, trace=trace))
    return traces


def _rows(steps: int, most: int) -> list[int]:
    """At most ``most`` grid steps, evenly spread, the first and the last included."""
    if steps <= most:
        return list(range(steps))
    return sorted({round(k * (steps - 1) / (most - 1)) for k in range(most)})


def methods_sheet(traces: list[MethodTrace], *, tile_width: int = 220, max_rows: int = MAX_ROWS) -> Image.Image:
    """One column per method (its spec and tokens kept on top), one row per grid step (at most
    ``max_rows``, evenly spread), the same frames in every column, and a legend."""
    if not traces:
        raise InputError("no memory method to draw; pass at least one, e.g. --memory fluxmem,evs.")
    steps = len(traces[0].trace.steps)
    rows = _rows(steps, max_rows)
    gap, label_w, size = 6, 118, 13
    regular, bold = font(size), font(size, bold=True)
    tiles = [[draw_step(t.trace.steps[r], width=tile_width, banner=False) for r in rows] for t in traces]
    tile_h = tiles[0][0].height
    head_h = 3 * (size + 4) + gap
    legend_img = _legend(label_w + len(traces) * (tile_width + gap) + gap)
    width = legend_img.width  # at least the columns' width
    height = head_h + len(rows) * (tile_h + gap) + gap + legend_img.height
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, t in enumerate(traces):
        x = label_w + gap + c * (tile_width + gap)
        result = t.result
        total = result.grid_thw[0] * result.grid_thw[1] * result.grid_thw[2]
        name = re.sub(r"(\d+\.\d{3})\d+", r"\1", t.method)  # a solved rate, to three places
        draw.text((x, gap), _fit(name, tile_width, bold), font=bold, fill=(0, 0, 0))
        draw.text((x, gap + size + 4), f"kept {result.kept_tokens}/{total} ({100 * result.kept_tokens / total:.0f}%)",
                  font=regular, fill=(0, 0, 0))
        if result.target is not None:
            draw.text((x, gap + 2 * (size + 4)), f"budget {result.target} tokens", font=regular, fill=(0, 0, 0))
    for i, r in enumerate(rows):
        y = head_h + i * (tile_h + gap)
        step = traces[0].trace.steps[r]
        when = f"{step.start_s:.1f}-{step.end_s:.1f} s"
        draw.text((gap, y + tile_h // 2 - size), f"step {step.index}", font=bold, fill=(0, 0, 0))
        draw.text((gap, y + tile_h // 2 + 2), when, font=regular, fill=(0, 0, 0))
        for c in range(len(traces)):
            x = label_w + gap + c * (tile_width + gap)
            sheet.paste(tiles[c][i], (x, y))
            draw.rectangle([x - 1, y - 1, x + tile_width, y + tile_h], outline=(0, 0, 0))
    sheet.paste(legend_img, (0, height - legend_img.height))
    if len(rows) < steps:
        note = f"{len(rows)} of {steps} grid steps shown, evenly spread"
        draw.text((gap, height - legend_img.height - size - 2), note, font=regular, fill=(90, 90, 90))
    return sheet


def _fit(text: str, width: int, text_font) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if measure.textlength(text, font=text_font) <= width:
        return text
    while len(text) > 1 and measure.textlength(text + "…", font=text_font) > width:
        text = text[:-1]
    return text + "…"


def _legend(width: int) -> Image.Image:
    """One line explaining the marks, at least ``width`` pixels wide."""
    size = 13
    text_font = font(size)
    swatch_h = 2 * size
    items = [
        (draw_step(_swatch_step("kept", 1), width=swatch_h, banner=False), "kept token"),
        (draw_step(_swatch_step("tas", 1), width=swatch_h, banner=False), "dropped (FluxMem: by TAS)"),
        (draw_step(_swatch_step("sdc", 4), width=4 * swatch_h, banner=False), "FluxMem's SDC: outline = cluster, disc = anchor"),
    ]
    pad = size // 2 + 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [swatch.width + 3 * pad + int(measure.textlength(text, font=text_font)) + pad for swatch, text in items]
    canvas = Image.new("RGB", (max(width, pad + sum(widths)), swatch_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for (swatch, text), item_w in zip(items, widths):
        canvas.paste(swatch, (x, pad))
        draw.rectangle([x, pad, x + swatch.width - 1, pad + swatch.height - 1], outline=(0, 0, 0))
        draw.text((x + swatch.width + pad, pad + (swatch_h - size) // 2 - 1), text, font=text_font, fill=(0, 0, 0))
        x += item_w
    return canvas


def methods_summary(traces: list[MethodTrace]) -> dict:
    """The numbers of the picture, JSON-ready."""
    return {
        "methods": [
            {"method": t.method, **t.result.stats().to_dict(), "kept_per_step": [s.kept_tokens for s in t.trace.steps]}
            for t in traces
        ]
    }

