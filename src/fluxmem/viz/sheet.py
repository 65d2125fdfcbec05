"""A contact sheet: every grid step of a video, with a title line and the legend."""

from __future__ import annotations

import math
import os

from PIL import Image, ImageDraw

from .overlay import banner_fits_one_line, draw_step, font, legend
from .records import MemoryTrace

MAX_SHEET_WIDTH = 1600


def _tile_width(steps: int, image_width: int) -> int:
    wanted = 320 if steps <= 16 else 240 if steps <= 64 else 160
    return min(wanted, max(image_width, 160))


def title_line(trace: MemoryTrace) -> str:
    counts = trace.tier_counts()
    tiers = ", ".join(f"{tier} {entry['frames']} steps ({entry['kept']}/{entry['tokens']})" for tier, entry in counts.items() if entry["frames"])
    name = os.path.basename(trace.source) if trace.source else "video"
    return (
        f"{name}: kept {trace.kept_tokens} of {trace.tokens} visual tokens "
        f"({100 * trace.retained_fraction:.1f}%) | {tiers}"
    )


def contact_sheet(
    trace: MemoryTrace, *, columns: int | None = None, tile_width: int | None = None, title: str | None = None
) -> Image.Image:
    """All steps side by side in time order (left to right, top to bottom), a title line (default:
    the token counts of the whole trace) and the legend."""
    steps = trace.steps
    if not steps:
        raise ValueError("the trace has no grid steps to draw")
    tile_width = tile_width or _tile_width(len(steps), steps[0].image.shape[1])
    two_lines = not all(banner_fits_one_line(step, tile_width) for step in steps)  # tiles align
    tiles = [draw_step(step, width=tile_width, two_line_banner=two_lines) for step in steps]
    gap = 6
    if columns is None:
        columns = max(1, min(len(tiles), (MAX_SHEET_WIDTH + gap) // (tile_width + gap)))
        rows = math.ceil(len(tiles) / columns)
        columns = math.ceil(len(tiles) / rows)  # balance the last row
    rows = math.ceil(len(tiles) / columns)
    tile_h = max(tile.height for tile in tiles)
    grid_w = columns * tile_width + (columns + 1) * gap
    sheet_w = max(grid_w, 640)
    title_size = 16
    title_font = font(title_size, bold=True)
    # the title may be wider than the sheet: wrap it at " | "
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, current = [], ""
    for part in (title if title is not None else title_line(trace)).split(" | "):
        candidate = part if not current else f"{current} | {part}"
        if current and measure.textlength(candidate, font=title_font) > sheet_w - 2 * gap:
            lines.append(current)
            current = part
        else:
            current = candidate
    lines.append(current)
    title_h = len(lines) * (title_size + 6) + gap
    key = legend(sheet_w)
    sheet = Image.new("RGB", (sheet_w, title_h + rows * (tile_h + gap) + gap + key.height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(lines):
        draw.text((gap, gap + i * (title_size + 6)), text, font=title_font, fill=(0, 0, 0))
    left = (sheet_w - grid_w) // 2
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        x = left + gap + col * (tile_width + gap)
        y = title_h + gap + row * (tile_h + gap)
        sheet.paste(tile, (x, y))
        draw.rectangle([x - 1, y - 1, x + tile.width, y + tile.height], outline=(0, 0, 0))
    sheet.paste(key, (0, sheet.height - key.height))
    return sheet
