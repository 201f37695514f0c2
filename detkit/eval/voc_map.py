"""Pascal VOC average precision: greedy matching by score, difficult boxes ignored, 11-point and all-point AP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from detkit.eval.records import Detections, GroundTruth

INTERPOLATIONS = ("all_point", "voc07", "coco101")

# One image's detections merged across Detections entries: boxes [M,4], labels [M], scores [M].
ImageDetections = tuple[np.ndarray, np.ndarray, np.ndarray]

# Exactly pycocotools' recall thresholds: linspace, not arange, so that searchsorted hits the same indices.
_COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class ClassAP:
    """Average precision of one class; `ap*` are None when the class has no non-difficult ground truth."""

    class_id: int
    ap: float | None
    ap_voc07: float | None
    ap_coco101: float | None
    npos: int
    num_detections: int
    recall: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    # Score and hit (true positive) of each point of the curve, in the curve's order.
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    hits: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class VocResult:
    """Per-class AP and means over the classes that have at least one non-difficult ground-truth box."""

    per_class: dict[int, ClassAP]
    map: float
    map_voc07: float
    map_coco101: float
    iou_threshold: float

    @property
    def evaluated_class_ids(self) -> list[int]:
        """Class ids that enter the means (those with npos > 0)."""
        return [c for c, r in self.per_class.items() if r.npos > 0]


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between every box in `boxes_a` [N,4] and `boxes_b` [M,4], as an [N,M] array."""
    # Continuous coordinates (area = (xmax - xmin) * (ymax - ymin), no VOC "+1"), the same convention as
    # pycocotools, so that our AP and the COCO AP agree box for box.
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0.0, None) * np.clip(iy, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's detections of one class to its gts; returns (order by score, outcome per detection).

    Outcome is 1 for a true positive, 0 for a false positive and -1 for a detection on an ignored
    (difficult) gt, which VOC counts as neither.
    """
    order, outcome, _ = match_image_to_gt(det_boxes, det_scores, gt_boxes, gt_ignore, iou_threshold)
    return order, outcome


def match_image_to_gt(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`match_image` plus, per detection in score order, the index of the gt it found (-1: none)."""
    # Stable sort, like pycocotools, so equal scores keep their input order.
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="mergesort")
    outcome = np.zeros(len(order), dtype=np.int8)
    found = np.full(len(order), -1, dtype=np.int64)
    if len(gt_boxes) == 0 or len(order) == 0:
        return order, outcome, found
    ious = iou_matrix(np.asarray(det_boxes)[order], gt_boxes)
    matched = np.zeros(len(gt_boxes), dtype=bool)
    for k in range(len(order)):
        # VOC devkit rule: take the single best-overlapping gt; if it is already taken the detection is a
        # duplicate (FP) even when another free gt also overlaps enough.
        j = int(np.argmax(ious[k]))
        if ious[k, j] < iou_threshold:
            continue
        if gt_ignore[j]:
            outcome[k] = -1
            found[k] = j
        elif not matched[j]:
            matched[j] = True
            outcome[k] = 1
            found[k] = j
    return order, outcome, found


def interpolated_ap(recall: np.ndarray, precision: np.ndarray, method: str = "all_point") -> float:
    """Area under a precision/recall curve (points in detection order) with the given interpolation."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if method == "all_point":
        # VOC2010+: make precision monotone from the right, then sum rectangles where recall changes.
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if method == "voc07":
        points = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(11) / 10.0]
        return float(np.mean(points))
    if method == "coco101":
        # Same procedure as COCOeval.accumulate, so that tests can compare with pycocotools exactly.
        if len(precision) == 0:
            return 0.0
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, _COCO_RECALL_THRESHOLDS, side="left")
        q = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
        return float(np.mean(q))
    raise ValueError(f"unknown interpolation {method!r}; expected one of {INTERPOLATIONS}")


def class_average_precision(
    ground_truths: Sequence[GroundTruth],
    detections_by_image: dict[str, ImageDetections],
    class_id: int,
    iou_threshold: float = 0.5,
) -> ClassAP:
    """AP of one class over a dataset; `detections_by_image` comes from `group_detections`."""
    scores: list[np.ndarray] = []
    outcomes: list[np.ndarray] = []
    npos = 0
    for gt in ground_truths:
        in_class = gt.labels == class_id
        # Crowd regions have no single instance to find, so treat them like difficult boxes.
        ignore = (gt.difficult | gt.iscrowd)[in_class]
        npos += int(np.count_nonzero(~ignore))
        if gt.image_id not in detections_by_image:
            continue
        boxes, labels, det_scores = detections_by_image[gt.image_id]
        mine = labels == class_id
        order, outcome = match_image(boxes[mine], det_scores[mine], gt.boxes[in_class], ignore, iou_threshold)
        scores.append(det_scores[mine][order])
        outcomes.append(outcome)

    score = np.concatenate(scores) if scores else np.zeros(0)
    outcome = np.concatenate(outcomes) if outcomes else np.zeros(0, dtype=np.int8)
    sorted_scores, hits, recall, precision = precision_recall(score, outcome, npos)
    if npos == 0:
        ap = ap07 = ap101 = None
    else:
        ap = interpolated_ap(recall, precision, "all_point")
        ap07 = interpolated_ap(recall, precision, "voc07")
        ap101 = interpolated_ap(recall, precision, "coco101")
    return ClassAP(class_id, ap, ap07, ap101, npos, int(len(score)), recall, precision, sorted_scores, hits)


def precision_recall(scores: np.ndarray, outcome: np.ndarray,
                     npos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The curve of one class: (scores, hit or not, recall, precision) per detection by falling score.

    `outcome` is `match_image`'s per detection (ignored ones, -1, are left out), `npos` the gts to find.
    """
    scores = np.asarray(scores, dtype=np.float64)
    # Images are concatenated in ground-truth order and sorted stably: the same tie-breaking as pycocotools.
    order = np.argsort(-scores, kind="mergesort")
    outcome = np.asarray(outcome)[order]
    kept = outcome >= 0
    hits = outcome[kept] == 1
    tp = np.cumsum(hits, dtype=np.float64)
    fp = np.cumsum(~hits, dtype=np.float64)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    recall = tp / npos if npos else np.zeros_like(tp)
    return scores[order][kept], hits, recall, precision


def group_detections(
    ground_truths: Sequence[GroundTruth], detections: Sequence[Detections]
) -> dict[str, ImageDetections]:
    """Merge detections per image_id into (boxes, labels, scores), rejecting ids absent from the ground truth."""
    image_ids = [gt.image_id for gt in ground_truths]
    known = set(image_ids)
    if len(known) != len(image_ids):
        raise ValueError("ground truth contains the same image_id more than once")
    parts: dict[str, list[Detections]] = {}
    for det in detections:
        if det.image_id not in known:
            raise ValueError(f"detections for image {det.image_id!r}, which has no ground-truth entry")
        parts.setdefault(det.image_id, []).append(det)
    # Several entries for one image must be matched together, or one gt could be claimed twice.
    return {
        image_id: (
            np.concatenate([d.boxes for d in dets]).reshape(-1, 4),
            np.concatenate([d.labels for d in dets]),
            np.concatenate([d.scores for d in dets]),
        )
        for image_id, dets in parts.items()
    }


def voc_average_precision(
    ground_truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    class_ids: Sequence[int] | None = None,
    iou_threshold: float = 0.5,
) -> VocResult:
    """Pascal VOC AP per class (all-point and 11-point) and the mean over classes with ground truth."""
    grouped = group_detections(ground_truths, detections)
    if class_ids is None:
        labels = [gt.labels for gt in ground_truths] + [det.labels for det in detections]
        class_ids = sorted({int(c) for arr in labels for c in arr})
    per_class = {
        int(c): class_average_precision(ground_truths, grouped, int(c), iou_threshold) for c in class_ids
    }
    scored = [r for r in per_class.values() if r.npos > 0]

    def mean(values: list[float | None]) -> float:
        return float(np.mean(values)) if values else 0.0

    return VocResult(
        per_class=per_class,
        map=mean([r.ap for r in scored]),
        map_voc07=mean([r.ap_voc07 for r in scored]),
        map_coco101=mean([r.ap_coco101 for r in scored]),
        iou_threshold=float(iou_threshold),
    )
