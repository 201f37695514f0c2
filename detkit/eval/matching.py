"""Every image's detections matched to its ground truth class by class, by VOC AP's rule, kept for analysis.

The confusion matrix, the TIDE error types and the worst photos all start from this one matching, the
same as `voc_map.match_image` makes for AP: detections by falling score, each taking the same-class gt it
overlaps most when that gt is free and the overlap reaches the IoU threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import group_detections, iou_matrix, match_image_to_gt

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


@dataclass
class ImageMatch:
    """One image: its gts, its detections by falling score, and how each detection was counted."""

    image_id: str
    gt_boxes: np.ndarray  # [G, 4]
    gt_labels: np.ndarray  # [G]
    gt_ignore: np.ndarray  # [G] difficult or crowd: neither found nor missed
    det_boxes: np.ndarray  # [D, 4], by falling score
    det_labels: np.ndarray  # [D]
    det_scores: np.ndarray  # [D], falling
    outcome: np.ndarray  # [D] TRUE_POSITIVE, FALSE_POSITIVE or IGNORED (on an ignored gt)
    found: np.ndarray  # [D] the gt a true positive (or ignored detection) found, else -1
    ious: np.ndarray  # [D, G] IoU with every gt, of any class

    @property
    def gt_found(self) -> np.ndarray:
        """[G] bool: the gt was found by a true positive."""
        hit = np.zeros(len(self.gt_boxes), dtype=bool)
        hit[self.found[self.outcome == TRUE_POSITIVE]] = True
        return hit


def match_images(ground_truths: Sequence[GroundTruth], detections: Sequence[Detections],
                 iou_threshold: float = 0.5) -> list[ImageMatch]:
    """One ImageMatch per ground-truth entry, in the same order."""
    grouped = group_detections(ground_truths, detections)
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))
    return [_match_one(gt, *grouped.get(gt.image_id, empty), iou_threshold) for gt in ground_truths]


def _match_one(gt: GroundTruth, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
               iou_threshold: float) -> ImageMatch:
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    boxes, labels, scores = boxes[order].reshape(-1, 4), labels[order], scores[order]
    ignore = gt.difficult | gt.iscrowd
    outcome = np.zeros(len(scores), dtype=np.int8)
    found = np.full(len(scores), -1, dtype=np.int64)
    for c in np.unique(labels):
        mine = np.flatnonzero(labels == c)
        theirs = np.flatnonzero(gt.labels == c)
        # The detections are already in score order, which the stable sort inside keeps.
        _, out, hit = match_image_to_gt(boxes[mine], scores[mine], gt.boxes[theirs], ignore[theirs], iou_threshold)
        outcome[mine] = out
        found[mine[hit >= 0]] = theirs[hit[hit >= 0]]
    return ImageMatch(gt.image_id, gt.boxes, gt.labels, ignore, boxes, labels, scores, outcome, found,
                      iou_matrix(boxes, gt.boxes))
