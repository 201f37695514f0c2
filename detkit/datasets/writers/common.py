"""What every writer shares: coordinates that read back exactly, image files written once, the file layout."""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Sequence

import numpy as np

from detkit.datasets.example import Example
from detkit.errors import DatasetError


def exact_values(values: Sequence[float], read: Callable[[list[float]], Sequence[float]],
                 target: Sequence[float]) -> list[float]:
    """The shortest decimals of `values` (integers first) that `read`, the reader's arithmetic from written values
    to normalised coordinates, turns into the same float32 numbers as `target`."""
    want = [np.float32(t) for t in target]
    candidates = []
    if all(abs(v - round(v)) < 1e-3 for v in values):
        candidates.append([float(round(v)) for v in values])
    candidates += [[float(f"{v:.{digits}g}") for v in values] for digits in range(1, 18)]
    for written in candidates:
        if [np.float32(v) for v in read(written)] == want:
            return written
    return [float(v) for v in values]  # 17 significant digits read back the float64 itself


def number_text(value: float) -> str:
    """A written coordinate: "12" rather than "12.0"."""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalised(example: Example) -> list[tuple[float, float, float, float]]:
    """The boxes as the record holds them (before float32): pixels over the stored size."""
    w, h = float(example.width), float(example.height)
    return [(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in example.boxes]


class Files:
    """Image and annotation files written under a root; the same path twice must mean the same content."""

    def __init__(self, root: str):
        """Write under `root` (an empty staging directory)."""
        self.root = root
        self.written: dict[str, tuple[str, str]] = {}  # relative path -> (digest, what wrote it)

    def write(self, rel: str, data: bytes, what: str) -> bool:
        """Write `data` at root/rel once; False if the same bytes were already there, a DatasetError if others were."""
        if os.path.isabs(rel) or rel.split("/")[0] == ".." or ".." in rel.replace("\\", "/").split("/"):
            raise DatasetError(f"{what}: image name {rel!r} would be written outside the export folder")
        digest = hashlib.sha256(data).hexdigest()
        if rel in self.written:
            if self.written[rel][0] != digest:
                raise DatasetError(f"{what} and {self.written[rel][1]} would both be written as {rel} with different "
                                   "content; give the photos distinct names, or export the splits one at a time")
            return False
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        self.written[rel] = (digest, what)
        return True


def flags_lost(example: Example, difficult: bool, crowd: bool) -> int:
    """How many boxes of `example` carry a flag the format cannot hold (difficult, crowd)."""
    return sum((d and not difficult) or (c and not crowd) for d, c in zip(example.difficult, example.is_crowd))
