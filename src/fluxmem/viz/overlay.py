"""One grid step drawn with the memory's decisions on top, and the legend that explains it.

Readable in colour and in greyscale print alike: the marks differ in brightness and pattern, never
in hue alone.

* kept token: the cell is left exactly as the model saw it;
* dropped by TAS (temporal redundancy): the cell is darkened to 30 % and hatched with light
  diagonal lines;
* merged by SDC (spatial redundancy, long-term only): clusters are outlined with a white line edged
  in black, their non-anchor cells darkened to 65 %, the anchor (which carries the cluster's mean)
  marked with a white disc ringed in black;
* tier: a banner above the picture — white for short-term, grey for mid-term, black for long-term,
  with the tier's name written out.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .records import StepView

TAS_BRIGHTNESS = 0.30
SDC_BRIGHTNESS = 0.65
HATCH_GREY = 200
HATCH_SPACING = 9
TIER_LABELS = {"short": "SHORT-TERM", "mid": "MID-TERM", "long": "LONG-TERM"}
# banner background, text colour; brightness tells the tiers apart in greyscale
TIER_BANNER = {"short": ((255, 255, 255), (0, 0, 0)), "mid": ((150, 150, 150), (0, 0, 0)), "long": ((20, 20, 20), (255, 255, 255))}
MIN_CELL_PX = 48
MIN_WIDTH = 384
MAX_WIDTH = 1280


@lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; Pillow's own font without it."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"),
            fallback_to_default=True,
        )
        return ImageFont.truetype(path, size)
    except Exception:  # pragma: no cover - matplotlib missing or without fonts
        return ImageFont.load_default(size=size)


def default_scale(image_width: int, grid_width: int) -> int:
    """Integer upscaling that gives each cell at least ``MIN_CELL_PX`` pixels (nearest-neighbour, so
    kept cells keep their exact pixels) without making wide frames huge."""
    wanted = max(MIN_WIDTH, MIN_CELL_PX * grid_width)
    scale = max(1, math.ceil(wanted / image_width))
    while scale > 1 and image_width * scale > max(MAX_WIDTH, image_width):
        scale -= 1
    return scale


def _cell_edges(size: int, cells: int) -> list[int]:
    return [round(i * size / cells) for i in range(cells + 1)]


def _hatch_mask(height: int, width: int, spacing: int, thickness: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs + ys) % spacing) < thickness


def draw_step(
    step: StepView,
    *,
    width: int | None = None,
    banner: bool = True,
    caption: str | None = None,
    two_line_banner: bool | None = None,
) -> Image.Image:
    """The step's picture with TAS drops dimmed and hatched, SDC clusters outlined with their anchor
    marked, and (with ``banner``) a tier banner above it. ``width`` defaults to an integer upscale
    (see :func:`default_scale`); the height follows the frame's aspect ratio. The banner takes two
    lines when one is too narrow (``two_line_banner`` forces either, for tiles that must align)."""
    image = Image.fromarray(step.image)
    grid_h, grid_w = step.grid_hw
    if width is None:
        scale = default_scale(image.width, grid_w)
        size = (image.width * scale, image.height * scale)
        picture = image.resize(size, Image.NEAREST)
    else:
        size = (int(width), max(1, round(image.height * width / image.width)))
        exact = size[0] % image.width == 0 and size[0] >= image.width
        picture = image.resize(size, Image.NEAREST if exact else Image.LANCZOS)
    pixels = np.asarray(picture).astype(np.float32)
    xs, ys = _cell_edges(size[0], grid_w), _cell_edges(size[1], grid_h)
    line = max(1, round(min(xs[1] - xs[0], ys[1] - ys[0]) / 24))
    hatch = _hatch_mask(size[1], size[0], max(5, HATCH_SPACING * line), line)

    tas, sdc = step.tas_dropped, step.sdc_dropped
    for row in range(grid_h):
        for col in range(grid_w):
            if not (tas[row, col] or sdc[row, col]):
                continue
            region = (slice(ys[row], ys[row + 1]), slice(xs[col], xs[col + 1]))
            if tas[row, col]:
                block = pixels[region] * TAS_BRIGHTNESS
                block[hatch[region]] = HATCH_GREY
            else:
                block = pixels[region] * SDC_BRIGHTNESS
            pixels[region] = block
    picture = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if step.merged_into.max(initial=-1) >= 0:
        _draw_clusters(picture, step, xs, ys, line)
    if not banner:
        return picture
    return _with_banner(picture, step, caption, two_line_banner)


def _draw_clusters(picture: Image.Image, step: StepView, xs: list[int], ys: list[int], line: int) -> None:
    """Outline every SDC cluster (white line edged in black) and mark its anchor with a disc."""
    draw = ImageDraw.Draw(picture)
    label = step.merged_into
    grid_h, grid_w = label.shape
    inner = max(2, 2 * line)
    segments = []
    for row in range(grid_h):
        for col in range(grid_w):
            here = label[row, col]
            if here < 0:
                continue
            # an edge of the cluster wherever the neighbour belongs elsewhere (or is outside)
            if row == 0 or label[row - 1, col] != here:
                segments.append(((xs[col], ys[row]), (xs[col + 1], ys[row])))
            if row == grid_h - 1 or label[row + 1, col] != here:
                segments.append(((xs[col], ys[row + 1]), (xs[col + 1], ys[row + 1])))
            if col == 0 or label[row, col - 1] != here:
                segments.append(((xs[col], ys[row]), (xs[col], ys[row + 1])))
            if col == grid_w - 1 or label[row, col + 1] != here:
                segments.append(((xs[col + 1], ys[row]), (xs[col + 1], ys[row + 1])))
    clamp_x = lambda x: min(max(x, 0), picture.width - 1)  # noqa: E731 - tiny helper
    clamp_y = lambda y: min(max(y, 0), picture.height - 1)  # noqa: E731
    for width, colour in ((inner + 2 * line, (0, 0, 0)), (inner, (255, 255, 255))):
        for (x0, y0), (x1, y1) in segments:
            draw.line([(clamp_x(x0), clamp_y(y0)), (clamp_x(x1), clamp_y(y1))], fill=colour, width=width)
    for cell in np.flatnonzero(step.anchors):
        row, col = divmod(int(cell), grid_w)
        cx, cy = (xs[col] + xs[col + 1]) / 2, (ys[row] + ys[row + 1]) / 2
        radius = max(3, min(xs[col + 1] - xs[col], ys[row + 1] - ys[row]) / 5)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(255, 255, 255), outline=(0, 0, 0), width=max(1, line + 1))


def banner_text(step: StepView) -> tuple[str, str]:
    """Left and right halves of a step's banner: where it is in time and tier, and what it keeps."""
    when = f"{step.start_s:.1f} s" if abs(step.end_s - step.start_s) < 1e-6 else f"{step.start_s:.1f}-{step.end_s:.1f} s"
    return f"step {step.index} | {when} | {TIER_LABELS.get(step.tier, step.tier.upper())}", f"kept {step.kept_tokens}/{step.tokens}"


def banner_fits_one_line(step: StepView, width: int, caption: str | None = None) -> bool:
    """Whether the banner's two halves fit side by side, a clear gap between them, in ``width`` pixels."""
    size, pad = _banner_metrics(width)
    left, right = banner_text(step)
    if caption:
        left = f"{caption} | {left}"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return measure.textlength(left, font=font(size, bold=True)) + measure.textlength(right, font=font(size)) + 2 * pad + 2 * size <= width


def _banner_metrics(width: int) -> tuple[int, int]:
    size = max(11, min(22, width // 28))
    return size, max(3, size // 3)


def _with_banner(picture: Image.Image, step: StepView, caption: str | None, two_lines: bool | None = None) -> Image.Image:
    size, pad = _banner_metrics(picture.width)
    regular, bold = font(size), font(size, bold=True)
    left, right = banner_text(step)
    if caption:
        left = f"{caption} | {left}"
    background, ink = TIER_BANNER.get(step.tier, TIER_BANNER["short"])
    measure = ImageDraw.Draw(picture)
    right_w = measure.textlength(right, font=regular)
    one_line = banner_fits_one_line(step, picture.width, caption) if two_lines is None else not two_lines
    height = (size + 2 * pad) if one_line else (2 * size + 3 * pad)
    canvas = Image.new("RGB", (picture.width, picture.height + height), background)
    canvas.paste(picture, (0, height))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), left, font=bold, fill=ink)
    if one_line:
        draw.text((picture.width - pad - right_w, pad), right, font=regular, fill=ink)
    else:
        draw.text((pad, 2 * pad + size), right, font=regular, fill=ink)
    draw.line([(0, height - 1), (picture.width, height - 1)], fill=(0, 0, 0), width=1)
    return canvas


# ------------------------------------------------------------------------------------- legend
def _swatch_step(kind: str, cells: int = 2) -> StepView:
    """A small fake step whose cells show one mark of the legend on a textured grey patch."""
    rng = np.random.default_rng(7)
    image = np.clip(150 + rng.integers(-35, 35, size=(28, 28 * cells, 3)), 0, 255).astype(np.uint8)
    keep = np.ones((1, cells), dtype=bool)
    tas = np.zeros((1, cells), dtype=bool)
    merged = np.full((1, cells), -1, dtype=np.int64)
    if kind == "tas":
        keep[:], tas[:] = False, True
    elif kind == "sdc":  # kept | anchor + member | kept: the outline shows whole
        merged[0, 1:3] = 1
        keep[0, 2] = False
    return StepView(0, "long", 0.0, 0.0, image, keep, tas, merged)


def legend(width: int) -> Image.Image:
    """A strip that explains every mark, wrapped to ``width`` pixels."""
    size = max(12, min(18, width // 60))
    text_font = font(size)
    swatch_h = 2 * size
    items: list[tuple[Image.Image, str]] = []
    items.append((draw_step(_swatch_step("kept", 1), width=swatch_h, banner=False), "kept token"))
    items.append((draw_step(_swatch_step("tas", 1), width=swatch_h, banner=False), "dropped by TAS (same as in the next or previous step)"))
    items.append((draw_step(_swatch_step("sdc", 4), width=4 * swatch_h, banner=False), "merged by SDC: outline = one cluster, disc = its anchor"))
    for tier in ("short", "mid", "long"):
        background, ink = TIER_BANNER[tier]
        chip = Image.new("RGB", (int(3.2 * size), swatch_h), background)
        ImageDraw.Draw(chip).rectangle([0, 0, chip.width - 1, chip.height - 1], outline=(0, 0, 0))
        items.append((chip, f"{TIER_LABELS[tier].lower()} banner"))
    pad = size // 2 + 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[Image.Image, str, int]]] = [[]]
    used = pad
    for swatch, text in items:
        item_w = swatch.width + pad + int(measure.textlength(text, font=text_font)) + 3 * pad
        if rows[-1] and used + item_w > width:
            rows.append([])
            used = pad
        rows[-1].append((swatch, text, item_w))
        used += item_w
    row_h = swatch_h + pad
    canvas = Image.new("RGB", (width, len(rows) * row_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * row_h
        for swatch, text, item_w in row:
            canvas.paste(swatch, (x, y))
            draw.rectangle([x, y, x + swatch.width - 1, y + swatch.height - 1], outline=(0, 0, 0))
            draw.text((x + swatch.width + pad, y + (swatch_h - size) // 2 - 1), text, font=text_font, fill=(0, 0, 0))
            x += item_w
    return canvas
