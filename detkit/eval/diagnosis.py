"""Why a detector fails, in numbers: the content of `detkit eval --report`'s report.json.

Built from the ground truth and detections `detkit.eval.runner.collect` returns: PR curves at IoU 0.5 and
0.75 with the best-F1 threshold per class, the confusion matrix and TP/FP/FN at one score threshold, TIDE
error types and their AP cost, AP by object size, and the photos with the most errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from detkit.eval import confusion, error_types, pr_curves, size_bins, worst_images
from detkit.eval.matching import ImageMatch, match_images
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import VocResult, voc_average_precision

BACKGROUND = "background"
MATCH_IOU = 0.5  # the IoU of the counts, the confusion matrix and the error types
REPORT_VERSION = 1


def choose_threshold(curves: VocResult, min_prob: Optional[float]) -> tuple[float, str]:
    """The score threshold of the counts and how it was chosen: `min_prob`, else the best F1 of all classes."""
    if min_prob is not None:
        return float(min_prob), "given (--min-prob)"
    point = pr_curves.pooled_best_f1(curves.per_class.values())
    # Without any detection every threshold counts the same (nothing); 1.0 says so.
    return (1.0 if point.threshold is None else point.threshold), "best F1 over all classes"


def threshold_counts(ground_truths: Sequence[GroundTruth], detections: Sequence[Detections],
                     class_names: Sequence[str], min_prob: Optional[float] = None,
                     curves: Optional[VocResult] = None) -> dict[str, Any]:
    """`detkit eval --json`'s threshold, per-class ap50/TP/FP/FN and confusion matrix (IoU 0.5)."""
    class_ids = list(range(1, len(class_names) + 1))
    curves = curves or voc_average_precision(ground_truths, detections, class_ids, MATCH_IOU)
    threshold, rule = choose_threshold(curves, min_prob)
    matches = match_images(ground_truths, detections, MATCH_IOU)
    matrix, _ = confusion.confusion_matrix(matches, len(class_names), threshold, MATCH_IOU)
    return _counts_json(class_names, curves, threshold, rule, matrix, matches)


def _counts_json(class_names: Sequence[str], curves: VocResult, threshold: float, rule: str, matrix: np.ndarray,
                 matches: Sequence[ImageMatch]) -> dict[str, Any]:
    tp, fp, fn = confusion.class_counts(matrix)
    return {
        "threshold": threshold,
        "threshold_rule": rule,
        "per_class": {name: {"ap50": curves.per_class[c].ap, "tp": int(tp[c - 1]), "fp": int(fp[c - 1]),
                             "fn": int(fn[c - 1])} for c, name in enumerate(class_names, start=1)},
        "confusion": {"labels": [*class_names, BACKGROUND], "matrix": matrix.tolist()},
        "ignored_detections": confusion.ignored_detections(matches, threshold),
    }


@dataclass
class Diagnosis:
    """Everything the report shows; `to_json()` is report.json's analysis part."""

    class_names: list[str]
    counts: dict[str, Any]  # threshold_counts()
    curves50: VocResult
    curves75: VocResult
    best: dict[int, pr_curves.OperatingPoint]
    costs: error_types.ErrorCosts
    edges: list[float]
    bins: list[size_bins.SizeBin]
    worst: list[worst_images.WorstImage]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready numbers: per class, PR curves, confusion, error types, sizes, worst photos."""
        names = self.class_names
        out = dict(self.counts)
        out["map50"], out["map75"] = self.curves50.map, self.curves75.map
        per_class = {}
        for c, name in enumerate(names, start=1):
            entry = dict(self.counts["per_class"][name])
            point = self.best[c]
            entry.update(ap75=self.curves75.per_class[c].ap, num_gt=self.curves50.per_class[c].npos,
                         best_f1={"threshold": point.threshold, "f1": point.f1, "precision": point.precision,
                                  "recall": point.recall})
            per_class[name] = entry
        out["per_class"] = per_class
        out["pr_curves"] = {
            "recall": pr_curves.RECALL_POINTS.round(2).tolist(),
            "precision_iou50": {n: pr_curves.sampled_precision(self.curves50.per_class[c]).tolist()
                                for c, n in enumerate(names, start=1)},
            "precision_iou75": {n: pr_curves.sampled_precision(self.curves75.per_class[c]).tolist()
                                for c, n in enumerate(names, start=1)},
        }
        costs = self.costs
        out["errors"] = {
            "types": list(error_types.ERROR_TYPES),
            "map": costs.mean_ap,
            "overall": {t: {"ap_cost": costs.mean_cost[t], "ap_share": costs.mean_share[t],
                            "count": int(sum(costs.count[t].values()))} for t in error_types.ERROR_TYPES},
            "per_class": {n: {t: {"ap_cost": costs.cost[t].get(c), "ap_share": costs.share[t].get(c),
                                  "count": costs.count[t][c]} for t in error_types.ERROR_TYPES}
                          for c, n in enumerate(names, start=1)},
        }
        out["sizes"] = {
            "edges_px": self.edges,
            "bins": [{"name": b.name, "min_px": b.low, "max_px": None if np.isinf(b.high) else b.high,
                      "num_gt": int(sum(b.num_gt.values())), "ap50": b.mean_ap,
                      "per_class": {n: {"num_gt": b.num_gt[c], "ap50": b.ap.get(c)}
                                    for c, n in enumerate(names, start=1)}} for b in self.bins],
        }
        out["worst_images"] = [{"rank": r, "index": w.index, "image_id": w.image_id,
                                "true_positives": w.true_positives, "num_errors": len(w.errors),
                                "errors": w.errors} for r, w in enumerate(self.worst, start=1)]
        return out


def diagnose(ground_truths: Sequence[GroundTruth], detections: Sequence[Detections], class_names: Sequence[str],
             min_prob: Optional[float] = None, num_worst: int = 12) -> Diagnosis:
    """All of the report's numbers from one split's ground truth and detections (original-image pixels)."""
    names = list(class_names)
    class_ids = list(range(1, len(names) + 1))
    curves50 = voc_average_precision(ground_truths, detections, class_ids, MATCH_IOU)
    curves75 = voc_average_precision(ground_truths, detections, class_ids, 0.75)
    threshold, rule = choose_threshold(curves50, min_prob)
    matches = match_images(ground_truths, detections, MATCH_IOU)
    matrix, per_image = confusion.confusion_matrix(matches, len(names), threshold, MATCH_IOU)
    errors = [error_types.classify_image(m, MATCH_IOU) for m in matches]
    edges = size_bins.size_edges(ground_truths)
    return Diagnosis(
        class_names=names,
        counts=_counts_json(names, curves50, threshold, rule, matrix, matches),
        curves50=curves50,
        curves75=curves75,
        best={c: pr_curves.best_f1(r.scores, r.hits, r.npos) for c, r in curves50.per_class.items()},
        costs=error_types.error_costs(matches, errors, class_ids),
        edges=edges,
        bins=size_bins.ap_by_size(ground_truths, detections, class_ids, edges, MATCH_IOU),
        worst=worst_images.worst_images(matches, per_image, errors, names, num_worst),
    )
