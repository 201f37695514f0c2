"""COCO box metrics (AP@[.5:.95], AP50, AR, by object size) via pycocotools, built in memory."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import group_detections

# Order of COCOeval.stats after summarize().
COCO_METRIC_NAMES = (
    "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)


def to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Convert [N,4] (xmin, ymin, xmax, ymax) boxes to COCO's (x, y, width, height)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _quiet_coco(dataset: dict[str, Any]) -> COCO:
    """A COCO object over an in-memory dataset dict, without its progress prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def build_coco_pair(
    ground_truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    class_ids: Sequence[int],
) -> tuple[COCO, COCO]:
    """Ground-truth and result COCO objects for the given data (image ids renumbered 1..N in order)."""
    grouped = group_detections(ground_truths, detections)
    images, gt_anns, dt_anns = [], [], []
    categories = [{"id": int(c), "name": str(c)} for c in class_ids]
    for number, gt in enumerate(ground_truths, start=1):
        # Integer ids: pycocotools sorts image ids and uses annotation id 0 to mean "unmatched",
        # so both are numbered from 1.
        images.append({"id": number, "file_name": gt.image_id, "width": int(gt.width), "height": int(gt.height)})
        # pycocotools knows no "difficult"; marking such boxes crowd makes COCOeval ignore them, as VOC does.
        crowd = gt.iscrowd | gt.difficult
        for box, label, is_crowd in zip(to_xywh(gt.boxes), gt.labels, crowd):
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": number, "category_id": int(label),
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": int(is_crowd),
            })
        if gt.image_id in grouped:
            boxes, labels, scores = grouped[gt.image_id]
            for box, label, score in zip(to_xywh(boxes), labels, scores):
                dt_anns.append({
                    "id": len(dt_anns) + 1, "image_id": number, "category_id": int(label),
                    "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                    "score": float(score), "iscrowd": 0,
                })
    coco_gt = _quiet_coco({"images": images, "annotations": gt_anns, "categories": categories})
    # Built directly rather than with COCO.loadRes, which crashes on an empty result list.
    coco_dt = _quiet_coco({"images": list(images), "annotations": dt_anns, "categories": categories})
    return coco_gt, coco_dt


def coco_metrics(
    ground_truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    class_ids: Sequence[int],
) -> dict[str, float]:
    """COCO AP/AR summary; -1.0 marks a metric with no ground truth to measure (pycocotools' convention)."""
    coco_gt, coco_dt = build_coco_pair(ground_truths, detections, class_ids)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.catIds = [int(c) for c in class_ids]
    # Keep our CLI's stdout clean: pycocotools prints progress and the summary table.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}
