"""The format-neutral annotated image that every reader yields."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

# (xmin, ymin, xmax, ymax) in pixels of the stored image.
PixelBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Example:
    """One image and its boxes; the parallel tuples hold one entry per box."""

    filename: str  # the image name as the annotations give it, stored as image/filename
    image_path: str  # where the image file is read from
    source: str  # the annotation location, for messages: "annotations/x.xml", "train.csv line 4"
    source_id: str = ""  # image/source_id; the filename unless the format has image ids (COCO)
    width: int = 0  # as annotated (0 = not given) until the image is decoded, then as stored
    height: int = 0
    boxes: tuple[PixelBox, ...] = ()
    classes: tuple[str, ...] = ()
    difficult: tuple[bool, ...] = ()
    is_crowd: tuple[bool, ...] = ()
    image_bytes: Optional[bytes] = field(default=None, repr=False)  # set once loaded and validated
    format: str = ""  # "jpeg" or "png" once loaded
    # What the reader changed to fit the format to boxes ("polygon as its bounding box"), counted in the summary.
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse parallel tuples of different lengths (a reader bug, not bad input)."""
        n = len(self.boxes)
        if not (len(self.classes) == len(self.difficult) == len(self.is_crowd) == n):
            raise ValueError(f"{self.source}: boxes, classes, difficult and is_crowd differ in length")

    @property
    def num_boxes(self) -> int:
        """How many boxes the image has."""
        return len(self.boxes)

    def keep_boxes(self, indices: Iterable[int]) -> "Example":
        """A copy with only the boxes at `indices`, in that order."""
        idx = list(indices)
        return dataclasses.replace(
            self,
            boxes=tuple(self.boxes[i] for i in idx),
            classes=tuple(self.classes[i] for i in idx),
            difficult=tuple(self.difficult[i] for i in idx),
            is_crowd=tuple(self.is_crowd[i] for i in idx),
        )

    def with_boxes(self, boxes: Iterable[PixelBox]) -> "Example":
        """A copy with new coordinates for the same boxes."""
        return dataclasses.replace(self, boxes=tuple(boxes))


@dataclass(frozen=True)
class Problem:
    """Bad input for one example: fatal unless --skip-bad, then listed in the summary."""

    file: str  # file, with line or element when known
    reason: str

    def message(self) -> str:
        """The one-line error text."""
        return f"{self.file}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        """The summary entry."""
        return {"file": self.file, "reason": self.reason}


ReaderItem = Union[Example, Problem]
