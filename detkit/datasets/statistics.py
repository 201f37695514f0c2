"""Per-image and per-box statistics of a converted split, read from its TFRecords (image bytes are not decoded).

One home for what `detkit dataset inspect` reports and what the training recipe (detkit/recipe/) reads.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from detkit.datasets.classes import read_classes
from detkit.datasets.tfrecord import iter_records


@dataclass
class SplitStatistics:
    """Image sizes, boxes in original-image pixels and their classes, as flat arrays.

    Boxes whose label is outside classes.json are counted in `invalid_labels` and left out of the box arrays.
    """

    classes: list[str]
    image_width: np.ndarray               # [I] pixels
    image_height: np.ndarray              # [I]
    boxes_per_image: np.ndarray           # [I] every box of the record, valid label or not
    box_image: np.ndarray                 # [B] index of each box's image
    box_label: np.ndarray                 # [B] 1-based
    box_width: np.ndarray                 # [B] pixels of the original image
    box_height: np.ndarray                # [B]
    box_difficult: np.ndarray             # [B] bool
    box_crowd: np.ndarray                 # [B] bool
    formats: Counter = field(default_factory=Counter)
    invalid_labels: int = 0

    @property
    def num_images(self) -> int:
        """How many images the split has."""
        return int(len(self.image_width))

    @property
    def num_boxes(self) -> int:
        """How many boxes with a valid label."""
        return int(len(self.box_label))

    def class_box_counts(self) -> np.ndarray:
        """[C] boxes per class (index c = label c + 1)."""
        return np.bincount(self.box_label - 1, minlength=len(self.classes))[: len(self.classes)]

    def class_image_counts(self) -> np.ndarray:
        """[C] images holding at least one box of each class."""
        pairs = np.unique(np.stack([self.box_image, self.box_label]), axis=1) if self.num_boxes else np.zeros((2, 0), int)
        return np.bincount(pairs[1] - 1, minlength=len(self.classes))[: len(self.classes)]

    def class_image_fraction(self) -> np.ndarray:
        """[C] fraction of the images holding each class (the f_c of repeat factor sampling)."""
        return self.class_image_counts() / max(self.num_images, 1)

    def resize_scales(self, min_size: int, max_size: int) -> np.ndarray:
        """[I] the input pipeline's resize factor of each image (detkit.datasets.pipeline.resize_scale)."""
        return resize_scales(self.image_height, self.image_width, min_size, max_size)


def resize_scales(height: np.ndarray, width: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """Shorter side to min_size unless the longer side would pass max_size, as pipeline.resize_scale."""
    h = np.maximum(np.asarray(height, np.float64), 1.0)
    w = np.maximum(np.asarray(width, np.float64), 1.0)
    return np.minimum(min_size / np.minimum(h, w), max_size / np.maximum(h, w))


def from_records(records: Iterable[dict[str, Any]], classes: list[str]) -> SplitStatistics:
    """Statistics of parsed records (keys of tfrecord.parse_example; normalised boxes)."""
    widths, heights, counts, formats = [], [], [], Counter()
    b_image, b_label, b_w, b_h, b_diff, b_crowd = [], [], [], [], [], []
    invalid = 0
    for i, rec in enumerate(records):
        w, h = int(rec["width"]), int(rec["height"])
        labels = np.asarray(rec["labels"], np.int64).reshape(-1)
        boxes = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        widths.append(w)
        heights.append(h)
        counts.append(len(labels))
        formats[rec["format"].decode() if isinstance(rec["format"], bytes) else str(rec["format"])] += 1
        valid = (labels >= 1) & (labels <= len(classes))
        invalid += int((~valid).sum())
        b_image.append(np.full(int(valid.sum()), i))
        b_label.append(labels[valid])
        b_w.append((boxes[valid, 2] - boxes[valid, 0]) * w)
        b_h.append((boxes[valid, 3] - boxes[valid, 1]) * h)
        b_diff.append(np.asarray(rec["difficult"], bool).reshape(-1)[valid])
        b_crowd.append(np.asarray(rec["is_crowd"], bool).reshape(-1)[valid])

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return SplitStatistics(
        classes=list(classes), image_width=np.asarray(widths, np.float64), image_height=np.asarray(heights, np.float64),
        boxes_per_image=np.asarray(counts, np.int64), box_image=cat(b_image, np.int64), box_label=cat(b_label, np.int64),
        box_width=cat(b_w, np.float64), box_height=cat(b_h, np.float64), box_difficult=cat(b_diff, bool),
        box_crowd=cat(b_crowd, bool), formats=formats, invalid_labels=invalid,
    )


def split_statistics(directory: str, split: str) -> SplitStatistics:
    """Statistics of one split of a `detkit dataset transform` output."""
    return from_records(iter_records(directory, split), read_classes(directory))
