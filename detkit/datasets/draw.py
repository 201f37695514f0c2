"""Draw boxes and class names on an image, readable on light and dark photos."""
from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours; a dark border around each keeps them visible on any background.
PALETTE = [
    (255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23),
    (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (52, 69, 147), (100, 115, 255),
    (132, 56, 255), (203, 56, 255), (255, 149, 200), (255, 157, 151),
]


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable colour per label."""
    return PALETTE[(label - 1) % len(PALETTE)]


def _text_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones."""
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[int],
               texts: Sequence[str]) -> Image.Image:
    """An RGB copy of `image` with pixel boxes (xmin, ymin, xmax, ymax) and their texts drawn."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(3, round(side / 150))
    font = ImageFont.load_default(size=max(12, round(side / 30)))
    for box, label, text in zip(boxes, labels, texts):
        x0, y0, x1, y1 = (float(v) for v in box)
        colour = class_colour(int(label))
        draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=(0, 0, 0), width=width + 2)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if text:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 6, bottom - top + 4
            ty = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the image top
            draw.rectangle((x0, ty, x0 + tw, ty + th), fill=colour, outline=(0, 0, 0))
            draw.text((x0 + 3 - left, ty + 2 - top), text, fill=_text_colour(colour), font=font)
    return out
