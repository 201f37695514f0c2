"""What the check needs to know of each image file: its stored size, EXIF orientation, hashes, and whether it decodes."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Optional

import imagehash
import numpy as np
from PIL import Image

from detkit.datasets.example import Example
from detkit.datasets.images import SUPPORTED, BadImage, image_error
from detkit.datasets.orientation import exif_orientation

# Decoded at this size or a little over (JPEG draft: 1/2 to 1/8 scale), which still reads every entropy-coded
# byte, so truncation is caught at a fraction of a full decode's cost; the perceptual hash needs only 32x32.
DRAFT_SIZE = (64, 64)
# Two photos are near-identical when at most this many of their 64 perceptual-hash bits differ. On the shared
# raccoon, bccd and cards sets, distinct photos differ by 12 bits or more, except burst shots of one scene.
NEAR_DUPLICATE_BITS = 6


@dataclass(frozen=True)
class ImageFacts:
    """One image file as the check sees it; `problem` is set (and the rest zero) when it cannot be used."""

    width: int = 0
    height: int = 0
    orientation: int = 1
    sha256: str = ""
    phash: Optional[int] = None
    problem: str = ""


def read_facts(example: Example) -> ImageFacts:
    """The facts of an example's image: its embedded bytes (records, LabelMe imageData) or its file."""
    data = example.image_bytes
    if data is None:
        try:
            with open(example.image_path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return ImageFacts(problem=f"cannot read image: {exc.strerror or exc}")
    return image_facts(data)


def image_facts(data: bytes) -> ImageFacts:
    """Size, orientation, SHA-256 and perceptual hash of encoded image bytes, decoding them once at a small scale."""
    if not data:
        return ImageFacts(problem="empty file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in SUPPORTED:
                raise BadImage(f"unsupported image format {im.format} (use JPEG or PNG)")
            width, height = im.size
            orientation = exif_orientation(im)
            if im.format in ("JPEG", "MPO"):
                im.draft("L", DRAFT_SIZE)
            im.load()
            phash = int(str(imagehash.phash(im)), 16)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        return ImageFacts(sha256=digest, problem=str(image_error(exc)))
    if width < 1 or height < 1:
        return ImageFacts(sha256=digest, problem=f"image has no pixels ({width}x{height})")
    return ImageFacts(width, height, orientation, digest, phash)


def hamming_pairs(hashes: list[int], max_bits: int, chunk: int = 64) -> list[tuple[int, int, int]]:
    """(i, j, differing bits) for every i < j whose 64-bit hashes differ in at most `max_bits` bits."""
    if len(hashes) < 2:
        return []
    values = np.array(hashes, dtype=np.uint64)
    popcount = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
    pairs = []
    for start in range(0, len(values), chunk):
        block = values[start:start + chunk]
        xor = block[:, None] ^ values[None, :]
        bits = popcount[xor.view(np.uint8)].reshape(len(block), len(values), 8).sum(-1)
        rows, cols = np.nonzero(bits <= max_bits)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                pairs.append((start + r, c, int(bits[r, c])))
    return sorted(pairs)
