"""One reader per annotation format; each yields `Example`s or `Problem`s for one split."""
from __future__ import annotations

from typing import Callable, Iterator

from detkit.datasets.example import ReaderItem
from detkit.datasets.readers.common import Source
from detkit.errors import DatasetError

FORMATS = ("voc", "coco", "csv", "yolo", "labelme")
# A `detkit dataset transform` output read back (check, export, fix); not a --type of transform.
CONVERTED = "converted"

Reader = Callable[[Source, str], Iterator[ReaderItem]]


def get_reader(fmt: str) -> Reader:
    """The `read(source, split)` function of a format."""
    if fmt == "voc":
        from detkit.datasets.readers.voc import read
    elif fmt == "coco":
        from detkit.datasets.readers.coco import read
    elif fmt == "csv":
        from detkit.datasets.readers.csv import read
    elif fmt == "yolo":
        from detkit.datasets.readers.yolo import read
    elif fmt == "labelme":
        from detkit.datasets.readers.labelme import read
    elif fmt == CONVERTED:
        from detkit.datasets.readers.converted import read
    else:
        raise DatasetError(f"unknown dataset type {fmt!r}; expected one of {', '.join(FORMATS)}")
    return read


__all__ = ["CONVERTED", "FORMATS", "Reader", "Source", "get_reader"]
