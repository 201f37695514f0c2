"""Evaluation data model (per-image ground truth and detections), the combined metrics dict, and a baseline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from detkit.eval.coco_metrics import coco_metrics
from detkit.eval.voc_map import voc_average_precision


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


def _check_labels(items: Sequence[GroundTruth] | Sequence[Detections], num_classes: int, what: str) -> None:
    for item in items:
        bad = item.labels[(item.labels < 1) | (item.labels > num_classes)]
        if bad.size:
            raise ValueError(
                f"{what} for image {item.image_id!r} has label {int(bad[0])}, outside 1..{num_classes}"
            )


def evaluate(
    ground_truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    class_names: list[str],
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """VOC mAP at `iou_threshold` plus COCO AP/AR, as a JSON-serialisable dict."""
    class_ids = list(range(1, len(class_names) + 1))
    _check_labels(ground_truths, len(class_names), "ground truth")
    _check_labels(detections, len(class_names), "detections")
    voc = voc_average_precision(ground_truths, detections, class_ids, iou_threshold)
    coco = coco_metrics(ground_truths, detections, class_ids)

    result: dict[str, Any] = {
        "iou_threshold": float(iou_threshold),
        "map50": voc.map,
        "map50_voc07": voc.map_voc07,
    }
    result.update({f"coco_{name}": value for name, value in coco.items()})
    result["per_class"] = {
        name: {
            "ap": voc.per_class[class_id].ap,
            "ap_voc07": voc.per_class[class_id].ap_voc07,
            "num_gt": voc.per_class[class_id].npos,
        }
        for class_id, name in zip(class_ids, class_names)
    }
    result["num_images"] = len(ground_truths)
    result["num_detections"] = int(sum(len(d.boxes) for d in detections))
    return result


def central_box_baseline(
    ground_truths: Sequence[GroundTruth],
    fraction: float = 0.8,
    label: int | Sequence[int] | None = 1,
) -> list[Detections]:
    """One score-1.0 box over the central `fraction` of each image, per class: the "learned nothing" baseline.

    `label` is one class id, a list of class ids (e.g. every id in class_names), or None for every class
    that appears in the ground truth.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if label is None:
        labels = sorted({int(c) for gt in ground_truths for c in gt.labels})
    elif isinstance(label, (int, np.integer)):
        labels = [int(label)]
    else:
        labels = [int(c) for c in label]

    baseline = []
    margin = (1.0 - fraction) / 2.0
    for gt in ground_truths:
        if gt.width <= 0 or gt.height <= 0:
            raise ValueError(f"image {gt.image_id!r} has no size (width/height); the baseline needs it")
        box = [margin * gt.width, margin * gt.height, (1.0 - margin) * gt.width, (1.0 - margin) * gt.height]
        baseline.append(
            Detections(gt.image_id, np.tile(box, (len(labels), 1)), np.array(labels), np.ones(len(labels)))
        )
    return baseline
