"""AP by object size, with size bins read from the data rather than COCO's fixed 32 and 96 pixels.

A box's size is the square root of its area in original-image pixels. The bin edges are the terciles of the
sizes of the evaluated gts, so each bin holds about a third of them, whatever the photos' scale. Within a
bin, AP follows COCO's rule for its size ranges: gts outside the bin are ignored, and so are unmatched
detections outside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detkit.eval.matching import IGNORED
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import group_detections, interpolated_ap, match_image, precision_recall

BIN_NAMES = ("small", "medium", "large")


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """sqrt(width * height) of [N, 4] (xmin, ymin, xmax, ymax) boxes, in pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))


def size_edges(ground_truths: Sequence[GroundTruth], num_bins: int = len(BIN_NAMES)) -> list[float]:
    """The inner bin edges: quantiles of the counted gts' sizes (fewer when sizes repeat, none without gts)."""
    sizes = np.concatenate([box_sizes(g.boxes[~(g.difficult | g.iscrowd)]) for g in ground_truths] or [np.zeros(0)])
    if len(sizes) == 0:
        return []
    edges = np.quantile(sizes, np.arange(1, num_bins) / num_bins)
    # Whole pixels read better, and ties (many boxes of one size) must not make empty bins.
    return sorted({float(round(e)) for e in edges if sizes.min() < round(e) <= sizes.max()})


@dataclass
class SizeBin:
    """One size range [low, high) px: how many gts it holds and AP at the IoU threshold within it."""

    name: str
    low: float
    high: float  # inf for the last bin
    num_gt: dict[int, int]  # class id -> counted gts in the bin
    ap: dict[int, float]  # class id -> AP within the bin (classes with gts there)

    @property
    def mean_ap(self) -> float | None:
        """Mean AP over the classes with gts in the bin; None when it holds none."""
        return float(np.mean(list(self.ap.values()))) if self.ap else None


def bin_names(count: int) -> list[str]:
    """small / medium / large for three bins; small / large for two; all for one."""
    return {1: ["all"], 2: ["small", "large"], 3: list(BIN_NAMES)}.get(count, [f"bin{i + 1}" for i in range(count)])


def ap_by_size(ground_truths: Sequence[GroundTruth], detections: Sequence[Detections], class_ids: Sequence[int],
               edges: Sequence[float], iou_threshold: float = 0.5) -> list[SizeBin]:
    """AP per class within each size bin bounded by `edges`."""
    grouped = group_detections(ground_truths, detections)
    bounds = [0.0, *edges, float("inf")]
    names = bin_names(len(bounds) - 1)
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))
    bins = []
    for name, low, high in zip(names, bounds[:-1], bounds[1:]):
        scores: dict[int, list[np.ndarray]] = {c: [] for c in class_ids}
        outcomes: dict[int, list[np.ndarray]] = {c: [] for c in class_ids}
        npos = dict.fromkeys(class_ids, 0)
        for gt in ground_truths:
            boxes, labels, det_scores = grouped.get(gt.image_id, empty)
            for c in set(np.unique(gt.labels).tolist()) | set(np.unique(labels).tolist()):
                if c not in npos:
                    continue
                in_class = gt.labels == c
                size = box_sizes(gt.boxes[in_class])
                ignore = (gt.difficult | gt.iscrowd)[in_class] | (size < low) | (size >= high)
                npos[c] += int(np.count_nonzero(~ignore))
                mine = labels == c
                order, outcome = match_image(boxes[mine], det_scores[mine], gt.boxes[in_class], ignore, iou_threshold)
                det_size = box_sizes(boxes[mine][order])
                outside = (det_size < low) | (det_size >= high)
                outcomes[c].append(np.where((outcome == 0) & outside, IGNORED, outcome))
                scores[c].append(det_scores[mine][order])
        ap = {}
        for c in class_ids:
            if npos[c]:
                _, _, recall, precision = precision_recall(np.concatenate(scores[c]), np.concatenate(outcomes[c]),
                                                           npos[c])
                ap[c] = interpolated_ap(recall, precision, "all_point")
        bins.append(SizeBin(name, low, high, npos, ap))
    return bins
