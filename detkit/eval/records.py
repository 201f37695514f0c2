"""The inputs of every metric: ground truth and detections of one image, as validated numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _boxes(value: Any, name: str) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float64)
    # An empty list has shape (0,), which would not broadcast against [N,4] elsewhere.
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4], got {boxes.shape}")
    return boxes


def _vector(value: Any, n: int, dtype: type, name: str) -> np.ndarray:
    arr = np.zeros(n, dtype=dtype) if value is None else np.asarray(value, dtype=dtype).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have {n} entries (one per box), got {arr.shape[0]}")
    return arr


@dataclass
class GroundTruth:
    """Ground-truth boxes of one image: pixel (xmin, ymin, xmax, ymax), 1-based labels, VOC/COCO flags."""

    image_id: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray | None = None
    iscrowd: np.ndarray | None = None
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        self.boxes = _boxes(self.boxes, "boxes")
        n = len(self.boxes)
        self.labels = _vector(self.labels, n, np.int64, "labels")
        # None means "no box is difficult / crowd", the common case outside VOC and COCO.
        self.difficult = _vector(self.difficult, n, bool, "difficult")
        self.iscrowd = _vector(self.iscrowd, n, bool, "iscrowd")
        self.width, self.height = int(self.width), int(self.height)


@dataclass
class Detections:
    """Detections in one image: pixel (xmin, ymin, xmax, ymax) boxes, 1-based labels, scores."""

    image_id: str
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = _boxes(self.boxes, "boxes")
        n = len(self.boxes)
        self.labels = _vector(self.labels, n, np.int64, "labels")
        self.scores = _vector(self.scores, n, np.float64, "scores")
