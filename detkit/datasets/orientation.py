"""EXIF orientation: the upright size of a stored photo and boxes moved between the upright and stored pixels.

detkit trains on the stored pixels (TensorFlow's decoders ignore EXIF); labelling tools that show the photo
upright (LabelMe, Ultralytics, CVAT) give boxes in the upright pixels. Orientation values as in EXIF 2.3 and
PIL.ImageOps.exif_transpose: 1 upright, 2 mirrored, 3 turned 180, 4 flipped, 5 transposed, 6 turned 90 clockwise
to view, 7 transversed, 8 turned 90 counter-clockwise to view.
"""
from __future__ import annotations

from PIL import Image

from detkit.datasets.example import PixelBox

SWAPS_AXES = (5, 6, 7, 8)


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of the photo as viewers show it."""
    return (height, width) if orientation in SWAPS_AXES else (width, height)


def _point_to_stored(x: float, y: float, orientation: int, width: int, height: int) -> tuple[float, float]:
    """A point of the upright photo in stored pixels; `width`, `height` are the stored size."""
    # Each case inverts what exif_transpose does to the stored pixels (edges, not pixel centres).
    if orientation == 2:
        return width - x, y
    if orientation == 3:
        return width - x, height - y
    if orientation == 4:
        return x, height - y
    if orientation == 5:
        return y, x
    if orientation == 6:
        return y, height - x
    if orientation == 7:
        return width - y, height - x
    if orientation == 8:
        return width - y, x
    return x, y


def _point_to_upright(x: float, y: float, orientation: int, width: int, height: int) -> tuple[float, float]:
    """A point of the stored pixels in the upright photo; `width`, `height` are the stored size."""
    if orientation == 6:
        return height - y, x
    if orientation == 7:
        return height - y, width - x
    if orientation == 8:
        return y, width - x
    return _point_to_stored(x, y, orientation, width, height)  # the other cases are their own inverse


def box_to_stored(box: PixelBox, orientation: int, width: int, height: int) -> PixelBox:
    """A box drawn on the upright photo, in the stored pixels (`width` x `height`)."""
    (ax, ay), (bx, by) = (_point_to_stored(box[0], box[1], orientation, width, height),
                          _point_to_stored(box[2], box[3], orientation, width, height))
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def box_to_upright(box: PixelBox, orientation: int, width: int, height: int) -> PixelBox:
    """A box of the stored pixels (`width` x `height`), on the upright photo."""
    (ax, ay), (bx, by) = (_point_to_upright(box[0], box[1], orientation, width, height),
                          _point_to_upright(box[2], box[3], orientation, width, height))
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def read_orientation(path_or_file: object) -> tuple[int, int, int]:
    """(stored width, stored height, EXIF orientation 1-8) from an image's header; OSError if unreadable."""
    with Image.open(path_or_file) as im:  # type: ignore[arg-type]
        return im.width, im.height, exif_orientation(im)


def exif_orientation(im: object) -> int:
    """The EXIF orientation tag of an open Pillow image; 1 when absent or invalid."""
    try:
        value = int(im.getexif().get(0x0112, 1))  # type: ignore[attr-defined]
    except Exception:  # a malformed EXIF block is not the image's fault: treat it as upright
        return 1
    return value if 1 <= value <= 8 else 1
