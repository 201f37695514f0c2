"""Where a split's annotations and images are, and parsing helpers shared by the readers."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from detkit.errors import DatasetError
from detkit.utils.textfile import NotUTF8, read_utf8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


@dataclass(frozen=True)
class Source:
    """Either a data directory in the format's layout, or an annotations file/dir plus an images dir."""

    data_dir: Optional[str] = None
    annotations: Optional[str] = None
    images_dir: Optional[str] = None

    @property
    def explicit(self) -> bool:
        """True when --annotations/--images-dir were given instead of --data-dir."""
        return self.data_dir is None


class BadValue(ValueError):
    """A malformed field; the reader adds the file and line or element."""


def require_dir(path: str, what: str) -> str:
    """`path` if it is a directory, else a DatasetError naming it."""
    if not os.path.isdir(path):
        kind = "is not a directory" if os.path.exists(path) else "not found"
        raise DatasetError(f"{what} {path}: {kind}")
    return path


def require_file(path: str, what: str) -> str:
    """`path` if it is a file, else a DatasetError naming it."""
    if not os.path.isfile(path):
        kind = "is a directory, expected a file" if os.path.isdir(path) else "not found"
        raise DatasetError(f"{what} {path}: {kind}")
    return path


def read_text(path: str) -> str:
    """A whole UTF-8 text file (a BOM is dropped); a DatasetError names the line of a bad byte."""
    try:
        return read_utf8(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except NotUTF8 as exc:
        raise DatasetError(f"{path} {exc}") from None


def annotations_layout(source: Source, fmt: str, what: str, annotations_name: str,
                       split: str) -> tuple[str, str]:
    """(annotations file, images dir): --annotations and --images-dir, or DATA_DIR/annotations_name and
    DATA_DIR/split."""
    if source.explicit:
        if not source.annotations or not source.images_dir:
            raise DatasetError(f"{fmt}: give --data-dir, or both --annotations ({what}) and --images-dir")
        return require_file(source.annotations, "annotations file"), require_dir(source.images_dir, "images directory")
    data_dir = require_dir(source.data_dir or "", "data directory")
    return (require_file(os.path.join(data_dir, annotations_name), "annotations file"),
            require_dir(os.path.join(data_dir, split), "images directory"))


def parse_number(text: object, what: str) -> float:
    """A finite float from an XML/CSV/JSON value, else BadValue naming `what`."""
    if isinstance(text, bool):
        raise BadValue(f"{what}: expected a number, got {text!r}")
    try:
        value = float(text.strip() if isinstance(text, str) else text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadValue(f"{what}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise BadValue(f"{what}: expected a finite number, got {text!r}")
    return value


def parse_size(text: object, what: str) -> int:
    """A non-negative image dimension (0 = not given); None or '' also mean not given."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return 0
    value = parse_number(text, what)
    if value < 0 or value != int(value):
        raise BadValue(f"{what}: expected a whole number of pixels, got {text!r}")
    return int(value)


def parse_flag(text: object, what: str) -> bool:
    """A 0/1 flag (VOC difficult, COCO iscrowd); missing means 0."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return False
    value = parse_number(text, what)
    if value not in (0, 1):
        raise BadValue(f"{what}: expected 0 or 1, got {text!r}")
    return bool(value)


class ImageFinder:
    """Resolves image names against one directory, tolerating a missing extension."""

    def __init__(self, images_dir: str):
        """Look images up in `images_dir`."""
        self.images_dir = images_dir
        self._by_stem: Optional[dict[str, str]] = None

    def find(self, name: str, fallback_stem: str = "") -> Optional[str]:
        """The path of image `name` (or of an image whose stem is `fallback_stem`), or None."""
        for candidate in (name, os.path.basename(name)):
            path = os.path.join(self.images_dir, candidate)
            if candidate and os.path.isfile(path):
                return path
        # Some tools (and Luminoth's CSV image_id) give the name without its extension.
        for stem in (name, os.path.splitext(os.path.basename(name))[0], fallback_stem):
            if stem and stem in self._stems():
                return os.path.join(self.images_dir, self._stems()[stem])
        return None

    def relative(self, path: str) -> str:
        """The name recorded as image/filename: relative to the images dir (basename if outside it)."""
        rel = os.path.relpath(path, self.images_dir)
        return os.path.basename(path) if rel.startswith("..") else rel

    def _stems(self) -> dict[str, str]:
        """Image file names by stem, listed once and only when an exact name misses."""
        if self._by_stem is None:
            self._by_stem = {}
            try:
                names = sorted(os.listdir(self.images_dir))
            except OSError:
                names = []
            for fname in names:
                stem, ext = os.path.splitext(fname)
                if ext in IMAGE_EXTENSIONS:
                    self._by_stem.setdefault(stem, fname)
        return self._by_stem
