"""The confusion matrix at a score threshold: a hand-made image, and an independent count on random data."""
import numpy as np
import pytest
from test_eval_voc_map import random_dataset

from detkit.eval.confusion import class_counts, confusion_matrix, ignored_detections
from detkit.eval.diagnosis import threshold_counts
from detkit.eval.matching import match_images
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import iou_matrix, voc_average_precision


def box(x):
    return [x, 0.0, x + 10.0, 10.0]


def hand_case():
    # a at 0 and 40, b at 20, a difficult box at 60; classes 1 (a) and 2 (b).
    gts = [GroundTruth("x", [box(0), box(20), box(40), box(60)], [1, 2, 1, 1], [False, False, False, True],
                       None, 100, 100)]
    dets = [Detections("x", [box(0), box(0), box(20), box(60), box(80), box(40)], [1, 1, 1, 1, 2, 1],
                       [0.9, 0.8, 0.7, 0.6, 0.5, 0.3])]
    return gts, dets


def test_hand_made_image_at_two_thresholds():
    gts, dets = hand_case()
    matches = match_images(gts, dets)
    matrix, (counts,) = confusion_matrix(matches, 2, threshold=0.4)
    # 0.9 finds a@0; 0.8 is its duplicate (background row); 0.7 (class a) lies on b@20; 0.6 on the difficult
    # box is left out; 0.5 (b) finds nothing; 0.3 is under the threshold, so a@40 is missed.
    np.testing.assert_array_equal(matrix, [[1, 0, 1],
                                           [1, 0, 0],
                                           [1, 1, 0]])
    tp, fp, fn = class_counts(matrix)
    assert tp.tolist() == [1, 0] and fp.tolist() == [2, 1] and fn.tolist() == [1, 1]
    assert ignored_detections(matches, 0.4) == 1
    assert counts.kept == 5 and counts.det_gt.tolist() == [0, -1, 1, -1, -1]
    assert counts.gt_det.tolist() == [0, 2, -1, -1]

    low, _ = confusion_matrix(matches, 2, threshold=0.2)
    np.testing.assert_array_equal(low[0], [2, 0, 0])  # a@40 found by the 0.3 detection


def test_the_right_class_keeps_its_gt_from_a_higher_scored_wrong_one():
    gts = [GroundTruth("x", [box(0)], [1], width=100, height=100)]
    dets = [Detections("x", [box(0), box(1)], [2, 1], [0.9, 0.5])]
    matrix, _ = confusion_matrix(match_images(gts, dets), 2, threshold=0.1)
    # AP's matching counts the class-1 detection as the true positive; the class-2 one found nothing free.
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_json_shape_of_the_counts():
    gts, dets = hand_case()
    out = threshold_counts(gts, dets, ["a", "b"], min_prob=0.4)
    assert out["threshold"] == 0.4 and out["threshold_rule"].startswith("given")
    assert out["confusion"] == {"labels": ["a", "b", "background"], "matrix": [[1, 0, 1], [1, 0, 0], [1, 1, 0]]}
    # AP: precision 1 at recall 0.5, then 2/4 at recall 1 (the 0.3 detection) -> 0.75
    assert out["per_class"]["a"] == {"ap50": pytest.approx(0.75), "tp": 1, "fp": 2, "fn": 1}
    assert out["ignored_detections"] == 1


def independent_count(gts, dets, num_classes, threshold):
    """Plain-Python greedy count by falling score at IoU 0.5: first each detection takes the free gt of its
    class it overlaps most (VOC: only its best same-class gt), then the unmatched ones a free gt of another class."""
    k = num_classes
    matrix = [[0] * (k + 1) for _ in range(k + 1)]
    by_image = {d.image_id: d for d in dets}
    for gt in gts:
        d = by_image[gt.image_id]
        order = sorted((i for i in range(len(d.scores)) if d.scores[i] >= threshold), key=lambda i: -d.scores[i])
        ious = iou_matrix(d.boxes, gt.boxes)
        owner = {}
        unmatched = []
        for i in order:
            same = [j for j in range(len(gt.boxes)) if gt.labels[j] == d.labels[i]]
            best = max(same, key=lambda j: ious[i, j], default=None)
            if best is not None and ious[i, best] >= 0.5:
                if gt.difficult[best]:
                    continue  # on a difficult box: neither
                if best not in owner:
                    owner[best] = i
                    continue
            unmatched.append(i)
        alone = []
        for i in unmatched:
            free = [j for j in range(len(gt.boxes)) if j not in owner and not gt.difficult[j]
                    and gt.labels[j] != d.labels[i] and ious[i, j] >= 0.5]
            if free:
                owner[max(free, key=lambda j: ious[i, j])] = i
            else:
                alone.append(i)
        for j in range(len(gt.boxes)):
            if not gt.difficult[j]:
                matrix[gt.labels[j] - 1][d.labels[owner[j]] - 1 if j in owner else k] += 1
        for i in alone:
            matrix[k][d.labels[i] - 1] += 1
    return np.array(matrix)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_an_independent_count_and_adds_up(seed):
    gts, dets = random_dataset(seed, num_images=30)
    matches = match_images(gts, dets)
    curves = voc_average_precision(gts, dets, [1, 2])
    for threshold in (0.0, 0.3, 0.7):
        matrix, _ = confusion_matrix(matches, 2, threshold)
        np.testing.assert_array_equal(matrix, independent_count(gts, dets, 2, threshold))
        # Every gt once in its class's row; every detection at or above the threshold once in the matrix.
        for c in (1, 2):
            assert matrix[c - 1].sum() == sum(int((g.labels == c).sum()) for g in gts)
        assert matrix[:, :2].sum() == sum(int((d.scores >= threshold).sum()) for d in dets)
        # The true positives are AP's own at that threshold.
        tp, fp, _ = class_counts(matrix)
        for c in (1, 2):
            curve = curves.per_class[c]
            assert tp[c - 1] == curve.hits[curve.scores >= threshold].sum()
            assert fp[c - 1] == (~curve.hits[curve.scores >= threshold]).sum()
    assert matrix[:2, :2].sum() - np.trace(matrix[:2, :2]) > 0  # the random data has confusions
