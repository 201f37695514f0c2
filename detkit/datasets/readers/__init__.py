"""One reader per annotation format; each yields `Example`s or `Problem`s for one split."""
from __future__ import annotations

from typing import Callable, Iterator

from detkit.datasets.example import ReaderItem
from detkit.datasets.readers import coco, converted, csv, labelme, voc, yolo
from detkit.datasets.readers.common import Source
from detkit.errors import DatasetError

FORMATS = ("voc", "coco", "csv", "yolo", "labelme")
# A `detkit dataset transform` output read back (check, export, fix); not a --type of transform.
CONVERTED = "converted"

Reader = Callable[[Source, str], Iterator[ReaderItem]]
_READERS: dict[str, Reader] = {"voc": voc.read, "coco": coco.read, "csv": csv.read, "yolo": yolo.read,
                               "labelme": labelme.read, CONVERTED: converted.read}


def get_reader(fmt: str) -> Reader:
    """The `read(source, split)` function of a format."""
    if fmt not in _READERS:
        raise DatasetError(f"unknown dataset type {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _READERS[fmt]


__all__ = ["CONVERTED", "FORMATS", "Reader", "Source", "get_reader"]
