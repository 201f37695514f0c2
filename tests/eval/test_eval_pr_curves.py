"""Best-F1 thresholds, sampled curves and TensorBoard's threshold counts, on hand-computed curves."""
import numpy as np
import pytest

from detkit.eval.pr_curves import best_f1, counts_at_thresholds, pooled_best_f1, sampled_precision
from detkit.eval.voc_map import ClassAP


def curve(scores, hits, npos):
    hits = np.asarray(hits, dtype=bool)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return ClassAP(1, None, None, None, npos, len(hits), tp / npos, precision, np.asarray(scores, float), hits)


def test_best_f1_picks_the_threshold_of_the_highest_f1():
    # tp 1,1,2,3 fp 0,1,1,1 of 4 gts: F1 = 2tp / (tp + fp + 4) = .4, .33, .57, .75
    point = best_f1([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1], 4)
    assert point.threshold == 0.6 and point.f1 == pytest.approx(0.75)
    assert point.precision == pytest.approx(0.75) and point.recall == pytest.approx(0.75)
    assert (point.tp, point.fp) == (3, 1)


def test_best_f1_keeps_ties_together_and_handles_no_detection():
    # Equal scores cannot be split by a threshold: 0.9 keeps both detections (F1 2/3), never only the hit.
    assert best_f1([0.9, 0.9], [1, 0], 1).threshold == 0.9
    assert best_f1([0.9, 0.9], [1, 0], 1).f1 == pytest.approx(2 / 3)
    assert best_f1([0.9, 0.8, 0.8], [0, 1, 1], 2).threshold == 0.8
    none = best_f1([], [], 3)
    assert none.threshold is None and none.f1 == 0.0


def test_pooled_threshold_counts_all_classes_together():
    a = curve([0.9, 0.3], [1, 1], 2)
    b = curve([0.8, 0.5], [0, 0], 1)
    # Pooled: 0.9 hit, 0.8 miss, 0.5 miss, 0.3 hit of 3 gts: F1 .5, .4, .33, .57 -> 0.3.
    assert pooled_best_f1([a, b]).threshold == 0.3
    assert pooled_best_f1([a, b]).f1 == pytest.approx(4 / 7)


def test_sampled_precision_is_the_envelope_at_recall_points():
    c = curve([0.9, 0.8, 0.7], [1, 0, 1], 2)  # precision 1, .5, .67 at recall .5, .5, 1
    values = sampled_precision(c, np.array([0.0, 0.5, 0.6, 1.0]))
    np.testing.assert_allclose(values, [1.0, 1.0, 2 / 3, 2 / 3])
    assert sampled_precision(curve([], [], 1), np.array([0.0, 1.0])).tolist() == [0.0, 0.0]


def test_counts_at_even_thresholds():
    c = curve([0.9, 0.5, 0.5, 0.2], [1, 0, 1, 0], 3)
    out = counts_at_thresholds(c, num_thresholds=3)  # thresholds 0, 0.5, 1
    assert out["tp"].tolist() == [2, 2, 0] and out["fp"].tolist() == [2, 1, 0] and out["fn"].tolist() == [1, 1, 3]
    np.testing.assert_allclose(out["precision"], [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(out["recall"], [2 / 3, 2 / 3, 0.0])
