"""Validate and decode uploaded images: size limits first, then the header, then the pixels.

No web framework here, so the rules are testable (and reusable) on their own.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from detkit.inputs import to_rgb

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000


class UploadError(Exception):
    """An upload the server refuses; `status` is the HTTP status to answer with."""

    status = 400


class UploadTooLarge(UploadError):
    """Over the byte or pixel limit (HTTP 413)."""

    status = 413


@dataclass(frozen=True)
class Limits:
    """What the server accepts: bytes of one upload, and pixels (width x height) of the decoded image."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def human_bytes(n: int) -> str:
    """'20 MB', '9.8 KB', '312 bytes'."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_size(n_bytes: int, limits: Limits) -> None:
    """Refuse an upload over the byte limit before anything decodes it."""
    if n_bytes > limits.max_bytes:
        raise UploadTooLarge(f"image too large: {human_bytes(n_bytes)} (limit {human_bytes(limits.max_bytes)})")


@contextlib.contextmanager
def _decoder_errors() -> Iterator[None]:
    """Any failure of Pillow on untrusted bytes as the UploadError that names it."""
    try:
        yield
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadTooLarge(f"image too large: {exc}") from None
    except Image.UnidentifiedImageError:
        raise UploadError("not an image file (expected JPEG, PNG, BMP, GIF, TIFF or WebP)") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any decoder failure is the file's fault
        # Truncated or corrupt files fail during the full decode; Pillow's plugins raise OSError or ValueError
        # mostly, but struct.error, IndexError and others on some malformed headers.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UploadError(f"cannot decode image: {reason}") from None


def pixel_count(data: bytes, limits: Limits) -> int:
    """Width x height from the file's header alone, or UploadError (empty, not an image, over a limit)."""
    if not data:
        raise UploadError("empty file: the 'image' field holds no bytes")
    check_size(len(data), limits)
    with _decoder_errors(), Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadTooLarge(f"image too large: {width}x{height} = {width * height / 1e6:.1f} megapixels "
                             f"(limit {limits.max_pixels / 1e6:.3g})")
    if width < 1 or height < 1:
        raise UploadError(f"image has no pixels ({width}x{height})")
    return width * height


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """The upright RGB uint8 pixels [H, W, 3] of an uploaded file, or UploadError saying why not."""
    pixel_count(data, limits)  # the header's checks, before any pixel is decoded
    with _decoder_errors(), Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(to_rgb(image), dtype=np.uint8)
