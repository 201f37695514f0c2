"""One writer per export format (`detkit dataset export`): the inverse of the readers of the same name.

Each writer takes loaded examples (pixel boxes of the stored image, image bytes) split by split and writes
the format's layout, with coordinates written so that its reader gives back the same float32 records.
"""
from __future__ import annotations

from typing import Any

from detkit.datasets.writers.coco import CocoWriter
from detkit.datasets.writers.voc import VocWriter
from detkit.datasets.writers.yolo import YoloWriter
from detkit.errors import DatasetError

EXPORT_FORMATS = ("coco", "voc", "yolo")
_WRITERS = {"coco": CocoWriter, "voc": VocWriter, "yolo": YoloWriter}


def get_writer(fmt: str) -> Any:
    """The writer class of an export format."""
    if fmt not in _WRITERS:
        raise DatasetError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    return _WRITERS[fmt]
