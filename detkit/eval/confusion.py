"""The confusion matrix at a score threshold, with a background row and column, and TP/FP/FN per class.

Detections at or above the threshold are counted in two passes, each greedy by falling score:
1. AP's own matching (matching.py): a detection that finds a free gt of its class is a true positive.
2. Each remaining detection takes the free gt of another class it overlaps most (IoU >= the threshold):
   that gt was found with the wrong class.
A gt left over was missed (background column); a detection left over found nothing (background row),
duplicates included. So every gt is counted once in its class's row, every detection once in the matrix;
difficult and crowd boxes, and detections on them, are left out, as AP leaves them out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detkit.eval.matching import FALSE_POSITIVE, IGNORED, TRUE_POSITIVE, ImageMatch


@dataclass
class ImageCounts:
    """How one image is counted: detections [0, kept) are at or above the threshold."""

    kept: int
    det_gt: np.ndarray  # [kept] the gt each detection is counted against, -1: none (background row)
    gt_det: np.ndarray  # [G] the detection each gt is counted against, -1: none (missed)


def count_image(match: ImageMatch, threshold: float, iou_threshold: float = 0.5) -> ImageCounts:
    """Count one image's detections with score >= `threshold` against its gts (the two passes above)."""
    kept = int(np.count_nonzero(match.det_scores >= threshold))
    outcome = match.outcome[:kept]
    det_gt = np.where(outcome == TRUE_POSITIVE, match.found[:kept], -1)
    taken = np.zeros(len(match.gt_boxes), dtype=bool)
    taken[det_gt[det_gt >= 0]] = True
    free = ~match.gt_ignore
    for k in np.flatnonzero(outcome == FALSE_POSITIVE):
        ious = match.ious[k]
        candidates = free & ~taken & (match.gt_labels != match.det_labels[k]) & (ious >= iou_threshold)
        if candidates.any():
            j = int(np.argmax(np.where(candidates, ious, -1.0)))
            det_gt[k] = j
            taken[j] = True
    gt_det = np.full(len(match.gt_boxes), -1, dtype=np.int64)
    counted = np.flatnonzero(det_gt >= 0)
    gt_det[det_gt[counted]] = counted
    return ImageCounts(kept, det_gt, gt_det)


def confusion_matrix(matches: Sequence[ImageMatch], num_classes: int, threshold: float,
                     iou_threshold: float = 0.5) -> tuple[np.ndarray, list[ImageCounts]]:
    """[K+1, K+1] counts (rows: gt class, then background; columns: detected class, then missed) and
    each image's counts."""
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    per_image = []
    for match in matches:
        counts = count_image(match, threshold, iou_threshold)
        per_image.append(counts)
        gts = np.flatnonzero(~match.gt_ignore)
        det = counts.gt_det[gts]
        columns = np.full(len(det), background, dtype=np.int64)
        columns[det >= 0] = match.det_labels[det[det >= 0]] - 1
        np.add.at(matrix, (match.gt_labels[gts] - 1, columns), 1)
        alone = (counts.det_gt < 0) & (match.outcome[:counts.kept] != IGNORED)
        np.add.at(matrix, (background, match.det_labels[:counts.kept][alone] - 1), 1)
    return matrix, per_image


def class_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP and FN of each class (length K) read from a confusion matrix with background row and column."""
    k = matrix.shape[0] - 1
    tp = np.diag(matrix)[:k]
    return tp, matrix[:, :k].sum(axis=0) - tp, matrix[:k, :].sum(axis=1) - tp


def ignored_detections(matches: Sequence[ImageMatch], threshold: float) -> int:
    """Detections at or above the threshold left out because they lie on a difficult or crowd box."""
    return int(sum(np.count_nonzero(m.outcome[m.det_scores >= threshold] == IGNORED) for m in matches))
