"""Precision-recall curves per class: the score threshold of the best F1, sampled curves, threshold counts.

The curves are `voc_map.ClassAP`'s (the ones `detkit eval`'s AP is the area of): points by falling score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from detkit.eval.voc_map import ClassAP

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class OperatingPoint:
    """Counting the detections with score >= threshold: their F1, precision, recall, TP and FP."""

    threshold: Optional[float]  # None: no detection at all
    f1: float
    precision: float
    recall: float
    tp: int
    fp: int


def best_f1(scores: np.ndarray, hits: np.ndarray, npos: int) -> OperatingPoint:
    """The threshold among the scores that maximises F1 (the highest such score on ties in F1)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return OperatingPoint(None, 0.0, 0.0, 0.0, 0, 0)
    order = np.argsort(-scores, kind="mergesort")
    scores, hits = scores[order], np.asarray(hits, dtype=bool)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    # A threshold keeps every detection of equal score: only the last of a run of ties is a real choice.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    f1 = 2.0 * tp[ends] / (tp[ends] + fp[ends] + npos)
    i = ends[int(np.argmax(f1))]
    return OperatingPoint(float(scores[i]), float(f1.max()), float(tp[i] / (i + 1)),
                          float(tp[i] / npos) if npos else 0.0, int(tp[i]), int(fp[i]))


def pooled_best_f1(curves: Iterable[ClassAP]) -> OperatingPoint:
    """The one threshold for every class that maximises F1 over all their detections and gts together."""
    curves = list(curves)
    scores = np.concatenate([c.scores for c in curves]) if curves else np.zeros(0)
    hits = np.concatenate([c.hits for c in curves]) if curves else np.zeros(0, dtype=bool)
    return best_f1(scores, hits, sum(c.npos for c in curves))


def sampled_precision(curve: ClassAP, recall_points: np.ndarray = RECALL_POINTS) -> np.ndarray:
    """The curve's precision envelope (best precision at this recall or more) at each of `recall_points`."""
    if len(curve.precision) == 0:
        return np.zeros(len(recall_points))
    envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
    idx = np.searchsorted(curve.recall, recall_points, side="left")
    return np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)


def counts_at_thresholds(curve: ClassAP, num_thresholds: int = 51) -> dict[str, np.ndarray]:
    """TP, FP, FN, precision and recall at `num_thresholds` score thresholds evenly spread over [0, 1]."""
    thresholds = np.linspace(0.0, 1.0, num_thresholds)
    # scores falls: the detections with score >= t are the first n of them.
    n = np.searchsorted(-curve.scores, -thresholds, side="right")
    tp_so_far = np.concatenate([[0], np.cumsum(curve.hits)])
    tp = tp_so_far[n].astype(np.float64)
    fp = n - tp
    fn = curve.npos - tp
    precision = np.where(n > 0, tp / np.maximum(n, 1), 1.0)
    recall = tp / curve.npos if curve.npos else np.zeros(num_thresholds)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall}
