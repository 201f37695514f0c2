"""Error types in the sense of TIDE (Bolya et al., ECCV 2020) and the AP each one costs.

Every false positive of AP's matching (matching.py, IoU `pos`) gets one type, tested in TIDE's order:
  background     the image has no gt to find
  localisation   its best overlap with a gt of its class is in [bg, pos): found, badly placed
  classification it overlaps a gt of another class by IoU >= pos: found, wrong class
  duplicate      it overlaps by IoU >= pos a gt of its class that a higher-scored detection found
  background     it overlaps every gt by IoU <= bg
  both           none of these: it overlaps a gt of another class by an IoU in (bg, pos)
A gt no true positive found is `missed` unless a localisation or classification error points at it (fixing
that error finds it).

The AP an error type costs is the AP gained when only its errors are fixed (TIDE's dAP), with AP computed by
the same code as `detkit eval`'s: a localisation or classification error becomes a true positive of the gt's class
(only the highest-scored one per gt; the others are removed), the other false positives are removed, and a
missed gt is no longer counted. A class whose every gt was missed has AP 1 once they are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from detkit.eval.matching import FALSE_POSITIVE, IGNORED, TRUE_POSITIVE, ImageMatch
from detkit.eval.voc_map import interpolated_ap, precision_recall

ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
NO_ERROR = -1
CLS, LOC, BOTH, DUPE, BKG, MISS = range(len(ERROR_TYPES))


@dataclass
class ImageErrors:
    """The error type of each detection (NO_ERROR for true positives and ignored ones) and missed gts."""

    det_type: np.ndarray  # [D] index into ERROR_TYPES or NO_ERROR
    det_target: np.ndarray  # [D] the gt a localisation or classification error points at, else -1
    missed: np.ndarray  # [G] bool


def classify_image(match: ImageMatch, pos: float = 0.5, bg: float = 0.1) -> ImageErrors:
    """The TIDE type of each false positive of one image and which of its gts were missed."""
    n_det, n_gt = len(match.det_scores), len(match.gt_boxes)
    det_type = np.full(n_det, NO_ERROR, dtype=np.int64)
    target = np.full(n_det, -1, dtype=np.int64)
    real = ~match.gt_ignore
    found = match.gt_found
    for k in np.flatnonzero(match.outcome == FALSE_POSITIVE):
        ious = match.ious[k]
        same = real & (match.gt_labels == match.det_labels[k])
        other = real & ~same
        s = np.where(same, ious, -1.0)
        o = np.where(other, ious, -1.0)
        if not real.any():
            det_type[k] = BKG
        elif bg <= s.max() < pos:
            det_type[k], target[k] = LOC, int(np.argmax(s))
        elif o.max() >= pos:
            det_type[k], target[k] = CLS, int(np.argmax(o))
        elif np.where(same & found, ious, -1.0).max() >= pos:
            det_type[k] = DUPE
        elif np.where(real, ious, -1.0).max() <= bg:
            det_type[k] = BKG
        else:
            det_type[k] = BOTH
    pointed = np.zeros(n_gt, dtype=bool)
    pointed[target[target >= 0]] = True
    missed = real & ~found & ~pointed
    return ImageErrors(det_type, target, missed)


def _fixers(match: ImageMatch, errors: ImageErrors) -> np.ndarray:
    """[D] bool: the error is the highest-scored one pointing at a gt nobody found, so fixing it finds it."""
    fixer = np.zeros(len(match.det_scores), dtype=bool)
    taken = match.gt_found.copy()
    for k in np.flatnonzero(errors.det_target >= 0):  # in falling score order
        j = errors.det_target[k]
        if not taken[j]:
            fixer[k] = taken[j] = True
    return fixer


@dataclass
class ErrorCosts:
    """Per class (by class id) and for the mean over classes with gts: AP, and what each error type costs."""

    ap: dict[int, float]
    cost: dict[str, dict[int, float]]  # type -> class id -> AP gained when its errors alone are fixed (TIDE's dAP)
    share: dict[str, dict[int, float]]  # type -> class id -> its share of 1 - AP (see `error_costs`)
    count: dict[str, dict[int, int]]  # type -> class id -> number of errors (by detected class; missed: gt class)
    mean_ap: float
    mean_cost: dict[str, float]
    mean_share: dict[str, float]


def error_costs(matches: Sequence[ImageMatch], errors: Sequence[ImageErrors], class_ids: Sequence[int]) -> ErrorCosts:
    """Each error type's count, AP cost (fixing one type at a time, as TIDE) and share of the missing AP.

    The costs overlap (fixing two types together can gain less than both costs), so they need not add up to
    1 - AP. The shares do, exactly: a type's share is its gain averaged over every order of fixing the six
    types one after another (the Shapley value), which is its cost when it does not interact with the others.
    """
    npos = {c: sum(int(np.count_nonzero((m.gt_labels == c) & ~m.gt_ignore)) for m in matches) for c in class_ids}
    missed = {c: sum(int(np.count_nonzero(e.missed & (m.gt_labels == c))) for m, e in zip(matches, errors))
              for c in class_ids}
    columns = _points(matches, errors)
    scored = [c for c in class_ids if npos[c] > 0]
    n = len(ERROR_TYPES)
    # AP of each class with every subset of the types fixed (bit t of the mask: type t fixed).
    fixed = {c: [_class_ap(_class_points(columns, c), c, npos[c], missed[c], mask) for mask in range(2 ** n)]
             for c in scored}
    weights = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    cost: dict[str, dict[int, float]] = {}
    share: dict[str, dict[int, float]] = {}
    count: dict[str, dict[int, int]] = {}
    for t, name in enumerate(ERROR_TYPES):
        bit = 1 << t
        cost[name] = {c: fixed[c][bit] - fixed[c][0] for c in scored}
        share[name] = {c: float(sum(weights[bin(mask).count("1")] * (fixed[c][mask | bit] - fixed[c][mask])
                                    for mask in range(2 ** n) if not mask & bit)) for c in scored}
        count[name] = ({c: missed[c] for c in class_ids} if t == MISS else
                       {c: int(np.count_nonzero((columns["type"] == t) & (columns["label"] == c))) for c in class_ids})
    mean = (lambda values: float(np.mean(values)) if values else 0.0)
    return ErrorCosts({c: fixed[c][0] for c in scored}, cost, share, count, mean([fixed[c][0] for c in scored]),
                      {name: mean(list(v.values())) for name, v in cost.items()},
                      {name: mean(list(v.values())) for name, v in share.items()})


def _points(matches: Sequence[ImageMatch], errors: Sequence[ImageErrors]) -> dict[str, np.ndarray]:
    """Every counted detection: score, class, hit, error type, and its class and hit once its error is fixed."""
    parts = []
    for match, err in zip(matches, errors):
        keep = match.outcome != IGNORED
        fixer = _fixers(match, err)
        target_label = np.zeros(len(match.det_scores), dtype=np.int64)
        pointing = err.det_target >= 0
        target_label[pointing] = match.gt_labels[err.det_target[pointing]]
        parts.append({
            "score": match.det_scores[keep], "label": match.det_labels[keep],
            "hit": (match.outcome == TRUE_POSITIVE)[keep], "type": err.det_type[keep],
            "fixer": fixer[keep], "fixed_label": target_label[keep],
        })
    dtypes = {"score": np.float64, "label": np.int64, "hit": bool, "type": np.int64, "fixer": bool,
              "fixed_label": np.int64}
    return {key: np.concatenate([p[key] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype=dtype)
            for key, dtype in dtypes.items()}


def _class_points(points: dict[str, np.ndarray], class_id: int) -> dict[str, np.ndarray]:
    """The points of one class: its detections, and the errors whose fix makes them a hit of this class."""
    mine = (points["label"] == class_id) | (points["fixer"] & (points["fixed_label"] == class_id))
    return {key: values[mine] for key, values in points.items()}


def _class_ap(points: dict[str, np.ndarray], class_id: int, npos: int, missed: int, mask: int) -> float:
    """All-point AP of one class with the error types in bit mask `mask` fixed (0: as they are)."""
    if mask >> MISS & 1:
        npos -= missed
    if npos <= 0:
        return 1.0
    hit = points["hit"].copy()
    keep = points["label"] == class_id
    for t in (CLS, LOC, BOTH, DUPE, BKG):
        if mask >> t & 1:
            of_type = points["type"] == t
            keep &= ~of_type  # removed, unless its fix turns it into a true positive of this class
            if t in (CLS, LOC):
                turned = of_type & points["fixer"] & (points["fixed_label"] == class_id)
                keep |= turned
                hit |= turned
    _, _, recall, precision = precision_recall(points["score"][keep], np.where(hit[keep], 1, 0), npos)
    return interpolated_ap(recall, precision, "all_point")
