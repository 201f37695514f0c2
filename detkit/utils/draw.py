"""Draw boxes and labels on images so they read well on light and dark photos, and tile images in a grid."""
from __future__ import annotations

import functools
import math
import zlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

# Saturated, mid-to-light colours that stay distinct from each other; the dark outline drawn around every
# line keeps even the light ones visible on white backgrounds.
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49),
    (145, 30, 180), (66, 212, 244), (240, 50, 230), (191, 239, 69), (250, 190, 212),
    (70, 153, 144), (220, 190, 255), (154, 99, 36), (255, 250, 200), (255, 85, 160),
    (170, 255, 195), (128, 128, 0), (255, 216, 177), (30, 144, 255), (169, 169, 169),
)
OUTLINE: RGB = (0, 0, 0)
GT_COLORS: tuple[RGB, RGB] = ((255, 255, 255), (0, 200, 0))  # alternating dashes of ground-truth boxes
GRID_BACKGROUND: RGB = (40, 40, 40)


def color_for(class_id: int) -> RGB:
    """Palette colour of a 1-based class id (class 1 gets the first colour)."""
    return PALETTE[(int(class_id) - 1) % len(PALETTE)]


def color_for_name(name: str) -> RGB:
    """Palette colour derived from a label string, stable across images and runs."""
    # crc32 rather than hash(): Python salts str hashes per process.
    return PALETTE[zlib.crc32(name.encode("utf-8")) % len(PALETTE)]


def text_color_for(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with `background` (WCAG relative luminance)."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in background]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Above ~0.179 the contrast ratio against black exceeds the one against white.
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def line_width_for(size: tuple[int, int]) -> int:
    """Box line width in pixels for an image of `size` (width, height)."""
    return max(2, round(min(size) / 150))


@functools.lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px, or its fixed-size bitmap font on Pillow < 10.1 / without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def place_label(
    box: Sequence[float], text_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Inclusive label rectangle (x0, y0, x1, y1): above the box, else inside its top; always in the image."""
    (width, height), (img_w, img_h) = text_size, image_size
    x0 = round(box[0])
    y0 = round(box[1]) - height if round(box[1]) - height >= 0 else round(box[1])
    x0 = max(0, min(x0, img_w - width))
    y0 = max(0, min(y0, img_h - height))
    return x0, y0, x0 + width - 1, y0 + height - 1


def _pixel_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    # Continuous (xmin, ymin, xmax, ymax) covers pixels xmin .. xmax - 1; PIL rectangles are inclusive.
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)


def _outlined_box(draw: ImageDraw.ImageDraw, box: Sequence[float], color: RGB, width: int) -> None:
    x0, y0, x1, y1 = _pixel_box(box)
    # A dark 1 px border on both sides of the coloured line, so it shows on light and dark backgrounds.
    draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=OUTLINE, width=width + 2)
    draw.rectangle((x0, y0, x1, y1), outline=color, width=width)


def _dashed_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colors: Sequence[RGB], width: int) -> None:
    x0, y0, x1, y1 = _pixel_box(box)
    draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=OUTLINE, width=width + 2)
    dash = max(4, 3 * width)
    inner_x1, inner_y1 = max(x0, x1 - width + 1), max(y0, y1 - width + 1)
    for n, start in enumerate(range(x0, x1 + 1, dash)):
        end = min(start + dash - 1, x1)
        draw.rectangle((start, y0, end, y0 + width - 1), fill=colors[n % len(colors)])
        draw.rectangle((start, inner_y1, end, y1), fill=colors[n % len(colors)])
    for n, start in enumerate(range(y0, y1 + 1, dash)):
        end = min(start + dash - 1, y1)
        draw.rectangle((x0, start, x0 + width - 1, end), fill=colors[n % len(colors)])
        draw.rectangle((inner_x1, start, x1, end), fill=colors[n % len(colors)])


def _draw_label(
    draw: ImageDraw.ImageDraw, box: Sequence[float], text: str, color: RGB, image_size: tuple[int, int]
) -> None:
    font = load_font(max(10, min(image_size) // 25))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 5)
    x0, y0, x1, y1 = place_label(box, (right - left + 2 * pad, bottom - top + 2 * pad), image_size)
    draw.rectangle((x0, y0, x1, y1), fill=color, outline=OUTLINE, width=1)
    # textbbox offsets (ascender space) are subtracted so the glyphs sit inside the padded rectangle.
    draw.text((x0 + pad - left, y0 + pad - top), text, fill=text_color_for(color), font=font)


def _check_lengths(boxes: np.ndarray, **columns: Sequence | None) -> None:
    for name, values in columns.items():
        if values is not None and len(values) != len(boxes):
            raise ValueError(f"{name} has {len(values)} entries but there are {len(boxes)} boxes")


def _as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def draw_detections(
    image: Image.Image,
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: list[str],
    scores: list[float] | None = None,
    color_key: list[int] | None = None,
) -> Image.Image:
    """A new RGB image with pixel (xmin, ymin, xmax, ymax) boxes and "label 0.97" tags drawn on `image`.

    Colours come from `color_key` (1-based class ids) when given, otherwise from the label text.
    """
    boxes = _as_boxes(boxes)
    _check_lengths(boxes, labels=labels, scores=scores, color_key=color_key)
    out = image.convert("RGB")  # always a new image, so the caller's is never modified
    draw = ImageDraw.Draw(out)
    width = line_width_for(out.size)
    colors = [color_for(k) for k in color_key] if color_key is not None else [color_for_name(s) for s in labels]
    # Lowest score first, so the most confident box and label end up on top.
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    for i in order:
        _outlined_box(draw, boxes[i], colors[i], width)
    for i in order:
        text = labels[i] if scores is None else f"{labels[i]} {scores[i]:.2f}".strip()
        if text:
            _draw_label(draw, boxes[i], text, colors[i], out.size)
    return out


def draw_ground_truth_and_detections(
    image: Image.Image,
    gt_boxes: np.ndarray | Sequence[Sequence[float]],
    det_boxes: np.ndarray | Sequence[Sequence[float]],
    det_labels: list[str],
    det_scores: list[float] | None,
    det_color_key: list[int] | None = None,
) -> Image.Image:
    """A new RGB image with ground truth as dashed white/green boxes under solid, labelled detections."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = line_width_for(out.size)
    for box in _as_boxes(gt_boxes):
        _dashed_box(draw, box, GT_COLORS, width)
    return draw_detections(out, det_boxes, det_labels, det_scores, det_color_key)


def make_grid(images: list[Image.Image], columns: int, cell_size: int) -> Image.Image:
    """Tile images into square `cell_size` cells, letterboxed, `columns` per row (fewer if fewer images)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if columns < 1 or cell_size < 4:
        raise ValueError(f"need columns >= 1 and cell_size >= 4, got {columns} and {cell_size}")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * cell_size, rows * cell_size), GRID_BACKGROUND)
    gap = max(1, cell_size // 100)  # a thin border keeps neighbouring thumbnails apart
    inner = cell_size - 2 * gap
    for n, img in enumerate(images):
        scale = min(inner / img.width, inner / img.height)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        thumb = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        row, col = divmod(n, columns)
        grid.paste(thumb, (col * cell_size + (cell_size - size[0]) // 2, row * cell_size + (cell_size - size[1]) // 2))
    return grid


def add_legend(image: Image.Image, entries: Sequence[tuple[str, RGB]]) -> Image.Image:
    """A new image: `image` above a strip with a coloured swatch and its text per entry."""
    font = load_font(max(12, min(image.size) // 30))
    probe = ImageDraw.Draw(image)
    boxes = [probe.textbbox((0, 0), text, font=font) for text, _ in entries]
    height = max([b[3] - b[1] for b in boxes] + [10])
    pad = max(4, height // 2)
    strip = Image.new("RGB", (image.width, height + 2 * pad), GRID_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    x = pad
    for (text, color), (left, top, _, _) in zip(entries, boxes):
        draw.rectangle((x, pad, x + height - 1, pad + height - 1), fill=color, outline=OUTLINE)
        x += height + pad // 2
        draw.text((x - left, pad - top), text, fill=(255, 255, 255), font=font)
        x += round(probe.textlength(text, font=font)) + 2 * pad
    out = Image.new("RGB", (image.width, image.height + strip.height))
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(strip, (0, image.height))
    return out
