"""The combined metrics dict (VOC mAP at the IoU threshold + COCO AP/AR), its names, and a baseline."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from detkit.eval.coco_metrics import coco_metrics
from detkit.eval.diagnosis import MATCH_IOU, threshold_counts
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import voc_average_precision
from detkit.runs.metrics import map_key, map_label

__all__ = ["Detections", "GroundTruth", "central_box_baseline", "evaluate", "map_key", "map_label"]


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
    min_prob: float | None = None,
) -> dict[str, Any]:
    """VOC mAP at `iou_threshold`, COCO AP/AR, and TP/FP/FN and the confusion matrix at IoU 0.5 and a score
    threshold (`min_prob`, else the best F1 of all classes), as a JSON-serialisable dict."""
    class_ids = list(range(1, len(class_names) + 1))
    _check_labels(ground_truths, len(class_names), "ground truth")
    _check_labels(detections, len(class_names), "detections")
    voc = voc_average_precision(ground_truths, detections, class_ids, iou_threshold)
    coco = coco_metrics(ground_truths, detections, class_ids)
    voc50 = voc if float(iou_threshold) == MATCH_IOU else None
    counts = threshold_counts(ground_truths, detections, class_names, min_prob, voc50)

    result: dict[str, Any] = {
        "iou_threshold": float(iou_threshold),
        map_key(iou_threshold): voc.map,
        f"{map_key(iou_threshold)}_voc07": voc.map_voc07,
    }
    result.update({f"coco_{name}": value for name, value in coco.items()})
    result["per_class"] = {
        name: {
            "ap": voc.per_class[class_id].ap,
            "ap_voc07": voc.per_class[class_id].ap_voc07,
            "num_gt": voc.per_class[class_id].npos,
            **counts["per_class"][name],
        }
        for class_id, name in zip(class_ids, class_names)
    }
    result.update({key: counts[key] for key in ("threshold", "threshold_rule", "confusion", "ignored_detections")})
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
