"""Read an image file, check that it decodes, and keep its original bytes unless TF could not use them."""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Pillow format -> image/format. MPO is the multi-picture JPEG many phones write; it is a valid JPEG.
SUPPORTED = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png"}
JPEG_MODES = ("RGB", "L")
# Decoding a JPEG at 1/8 scale still reads every entropy-coded byte, so truncation is still caught.
DRAFT_SCALE = 8

# Images between Pillow's warning and error thresholds (89-179 MP) are accepted by design; above the error
# threshold they are counted skips with their own reason. The warning would only be noise on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImage(Exception):
    """An image that cannot be used; the message is the reason for the summary."""


@dataclass(frozen=True)
class LoadedImage:
    """Validated image bytes and the stored pixel size."""

    data: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int
    reencoded: str = ""  # why the bytes were re-encoded; "" = original bytes


def load_image(path: str) -> LoadedImage:
    """Read and validate the image at `path`; BadImage with the reason if unusable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise BadImage(f"cannot read image: {exc.strerror or exc}") from None
    return validate_image(data)


def validate_image(data: bytes) -> LoadedImage:
    """Decode `data` with Pillow; return it as is, or re-encoded if TF's decode(channels=3) could not use it.

    The size recorded is the stored pixel size: EXIF orientation is ignored, as labelling tools
    mostly annotate the stored pixels and TF's decoders ignore EXIF too, so boxes stay aligned.
    """
    if not data:
        raise BadImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in SUPPORTED:
                raise BadImage(f"unsupported image format {im.format} (use JPEG or PNG)")
            fmt = SUPPORTED[im.format]
            width, height = im.size
            reason = _conversion_reason(fmt, im.mode, data)
            if reason:
                return LoadedImage(_reencode(im, fmt), fmt, width, height, reason)
            if fmt == "jpeg":
                im.draft(None, (max(1, width // DRAFT_SCALE), max(1, height // DRAFT_SCALE)))
            im.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise image_error(exc) from None
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    return LoadedImage(data, fmt, width, height)


def image_error(exc: Exception) -> BadImage:
    """The BadImage, with its reason, for what Pillow raised while opening or decoding an image."""
    if isinstance(exc, BadImage):
        return exc
    if isinstance(exc, Image.UnidentifiedImageError):
        return BadImage("not an image (unrecognised file content)")
    if isinstance(exc, Image.DecompressionBombError):
        # Not corrupt: Pillow refuses to decode this many pixels at all, so say so and how to fix it.
        return BadImage(too_large_reason(exc))
    return BadImage(f"corrupt or truncated image ({exc})")


def too_large_reason(exc: Exception) -> str:
    """The skip reason for an image Pillow refuses as a decompression bomb."""
    numbers = re.findall(r"\d+", str(exc))
    pixels = f"{int(numbers[0])} pixels, " if numbers else ""
    limit = int(2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else 0
    return f"image too large ({pixels}over the {limit} pixel limit): resize it before converting"


def _conversion_reason(fmt: str, mode: str, data: bytes) -> str:
    """Why the image must be re-encoded to decode as 8-bit RGB, or "" if it can pass through."""
    if fmt == "jpeg":
        return "" if mode in JPEG_MODES else f"{mode} JPEG re-encoded as RGB"
    # PNG IHDR: the bit depth is byte 24 (8-byte signature, 4 length, 4 type, 4 width, 4 height).
    if len(data) > 24 and data[24] == 16:
        return "16-bit PNG re-encoded as 8-bit"
    return ""


def _reencode(im: Image.Image, fmt: str) -> bytes:
    """The image as 8-bit RGB JPEG (quality 95) or 8-bit PNG, keeping alpha and grayscale in PNG."""
    im.load()
    if im.mode.startswith("I"):
        # 16-bit grayscale: keep the high byte (Pillow's convert("L") would clip, not scale).
        im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif fmt == "jpeg" or im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        im = im.convert("RGB")
    out = io.BytesIO()
    if fmt == "jpeg":
        im.save(out, format="JPEG", quality=95)
    else:
        im.save(out, format="PNG")
    return out.getvalue()
