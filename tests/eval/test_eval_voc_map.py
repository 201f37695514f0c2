"""Pascal VOC AP on hand-made cases whose value is known, and agreement with pycocotools on random data."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.eval.metrics import Detections, GroundTruth
from detkit.eval.voc_map import interpolated_ap, iou_matrix, voc_average_precision

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 40.0, 40.0]


def gt(image_id, boxes, labels=None, difficult=None):
    return GroundTruth(image_id, boxes, labels if labels is not None else [1] * len(boxes), difficult, None, 100, 100)


def det(image_id, boxes, scores, labels=None):
    return Detections(image_id, boxes, labels if labels is not None else [1] * len(boxes), scores)


def test_iou_uses_continuous_coordinates():
    # Overlap 5 x 10 of two 10 x 10 boxes: 50 / 150. VOC's "+1" pixel convention would give 66 / 176.
    assert iou_matrix([A], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
    assert iou_matrix([[0, 0, 1, 1]], [[1, 0, 2, 1]])[0, 0] == 0.0  # touching boxes do not overlap
    assert iou_matrix(np.zeros((0, 4)), [A]).shape == (0, 1)


def test_one_perfect_detection_gives_ap_one():
    result = voc_average_precision([gt("a", [A])], [det("a", [A], [0.9])])
    assert result.per_class[1].ap == 1.0
    assert result.per_class[1].ap_voc07 == 1.0
    assert result.map == 1.0 and result.map_voc07 == 1.0


def test_tp_fp_tp_known_values():
    # 2 gts; detections by descending score are TP, FP, TP:
    #   rank  tp fp  precision  recall
    #   1     1  0   1          0.5
    #   2     1  1   1/2        0.5
    #   3     2  1   2/3        1.0
    # all-point: 0.5 * 1 + 0.5 * 2/3 = 5/6
    # 11-point: recall >= 0.0 .. 0.5 (6 points) -> 1, recall >= 0.6 .. 1.0 (5 points) -> 2/3: (6 + 10/3) / 11
    # COCO 101-point: thresholds 0.00 .. 0.50 (51) -> 1, 0.51 .. 1.00 (50) -> 2/3: (51 + 100/3) / 101
    far = [60.0, 60.0, 70.0, 70.0]
    result = voc_average_precision([gt("a", [A, B])], [det("a", [A, far, B], [0.9, 0.8, 0.7])])
    r = result.per_class[1]
    np.testing.assert_allclose(r.precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r.recall, [0.5, 0.5, 1.0])
    assert r.ap == pytest.approx(5 / 6)
    assert r.ap_voc07 == pytest.approx((6 + 10 / 3) / 11)
    assert r.ap_coco101 == pytest.approx((51 + 100 / 3) / 101)
    assert r.npos == 2 and r.num_detections == 3


def test_detection_order_is_by_score_not_input_order():
    far = [60.0, 60.0, 70.0, 70.0]
    shuffled = voc_average_precision([gt("a", [A, B])], [det("a", [B, A, far], [0.7, 0.9, 0.8])])
    assert shuffled.map == pytest.approx(5 / 6)


def test_duplicate_detection_is_false_positive():
    # A found twice before B: TP, FP, TP as above.
    result = voc_average_precision([gt("a", [A, B])], [det("a", [A, A, B], [0.9, 0.8, 0.7])])
    np.testing.assert_allclose(result.per_class[1].precision, [1, 0.5, 2 / 3])
    assert result.map == pytest.approx(5 / 6)


def test_higher_score_claims_the_gt_even_with_lower_iou():
    loose = [0.0, 0.0, 10.0, 6.0]  # IoU 0.6
    result = voc_average_precision([gt("a", [A])], [det("a", [A, loose], [0.5, 0.9])])
    np.testing.assert_allclose(result.per_class[1].precision, [1.0, 0.5])  # loose box is the TP


def test_iou_threshold_is_inclusive():
    half = [0.0, 0.0, 10.0, 5.0]  # IoU exactly 0.5
    under = [0.0, 0.0, 10.0, 4.9]
    assert voc_average_precision([gt("a", [A])], [det("a", [half], [0.9])]).map == 1.0
    assert voc_average_precision([gt("a", [A])], [det("a", [under], [0.9])]).map == 0.0
    assert voc_average_precision([gt("a", [A])], [det("a", [under], [0.9])], iou_threshold=0.45).map == 1.0


def test_detection_on_difficult_gt_is_ignored():
    gts = [gt("a", [A, B], difficult=[False, True])]
    # The detection of the difficult box ranks first; were it an FP, AP would drop to 0.5.
    result = voc_average_precision(gts, [det("a", [B, B, A], [0.9, 0.85, 0.8])])
    r = result.per_class[1]
    assert r.npos == 1
    assert r.ap == 1.0 and r.ap_voc07 == 1.0
    np.testing.assert_allclose(r.precision, [1.0])


def test_undetected_difficult_gt_does_not_lower_recall():
    result = voc_average_precision([gt("a", [A, B], difficult=[False, True])], [det("a", [A], [0.9])])
    assert result.map == 1.0


def test_crowd_gt_is_ignored_like_difficult():
    g = GroundTruth("a", [A, B], [1, 1], None, [False, True], 100, 100)
    assert voc_average_precision([g], [det("a", [B, A], [0.9, 0.8])]).map == 1.0


def test_wrong_class_does_not_count():
    result = voc_average_precision([gt("a", [A], labels=[1])], [det("a", [A], [0.9], labels=[2])], class_ids=[1, 2])
    assert result.per_class[1].ap == 0.0
    assert result.per_class[2].ap is None  # class 2 has no gt
    assert result.map == 0.0  # mean over class 1 only


def test_class_without_gt_is_excluded_from_mean():
    result = voc_average_precision(
        [gt("a", [A], labels=[1])],
        [det("a", [A, B], [0.9, 0.8], labels=[1, 2])],
        class_ids=[1, 2, 3],
    )
    assert result.per_class[2].npos == 0 and result.per_class[2].num_detections == 1
    assert result.evaluated_class_ids == [1]
    assert result.map == 1.0


def test_images_without_detections_count_as_missed():
    result = voc_average_precision([gt("a", [A]), gt("b", [A])], [det("a", [A], [0.9])])
    assert result.map == pytest.approx(0.5)


def test_several_entries_for_one_image_are_matched_together():
    result = voc_average_precision([gt("a", [A])], [det("a", [A], [0.9]), det("a", [A], [0.8])])
    np.testing.assert_allclose(result.per_class[1].precision, [1.0, 0.5])


def test_detections_for_unknown_image_are_rejected():
    with pytest.raises(ValueError, match="no ground-truth entry"):
        voc_average_precision([gt("a", [A])], [det("zzz", [A], [0.9])])


def test_no_detections_gives_zero():
    result = voc_average_precision([gt("a", [A])], [])
    assert result.map == 0.0 and result.map_voc07 == 0.0 and result.map_coco101 == 0.0


def test_interpolated_ap_rejects_unknown_method():
    with pytest.raises(ValueError, match="interpolation"):
        interpolated_ap(np.array([1.0]), np.array([1.0]), "bogus")


def random_dataset(seed=0, num_images=20):
    """Seeded gts (non-overlapping within an image) and noisy detections: misses, duplicates, wrong classes."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    cell = 160  # 4 x 3 grid of cells on a 640 x 480 image; one gt per cell at most
    for i in range(num_images):
        cells = rng.choice(12, size=rng.integers(1, 7), replace=False)
        boxes, labels = [], []
        for c in cells:
            x0, y0 = (c % 4) * cell, (c // 4) * cell
            w, h = rng.uniform(12, cell - 2, size=2)
            x, y = x0 + rng.uniform(0, cell - w), y0 + rng.uniform(0, cell - h)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(1, 3)))
        d_boxes, d_labels = [], []
        for box, label in zip(boxes, labels):
            w, h = box[2] - box[0], box[3] - box[1]
            for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
                if rng.random() < 0.15:
                    continue  # a miss
                noise = rng.normal(0, 0.15, size=4) * [w, h, w, h]
                x_min, y_min, x_max, y_max = np.asarray(box) + noise
                d_boxes.append([min(x_min, x_max - 1), min(y_min, y_max - 1), x_max, y_max])
                d_labels.append(label if rng.random() < 0.9 else 3 - label)
        for _ in range(rng.integers(0, 4)):  # background false positives
            x, y = rng.uniform(0, 600), rng.uniform(0, 440)
            d_boxes.append([x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)])
            d_labels.append(int(rng.integers(1, 3)))
        image_id = f"img{i:03d}"
        gts.append(GroundTruth(image_id, boxes, labels, None, None, 640, 480))
        dets.append(Detections(image_id, d_boxes, d_labels, rng.random(len(d_boxes))))
    return gts, dets


def pycocotools_ap50(gts, dets):
    """Per-class AP at IoU 0.5 from COCOeval, built from plain dicts independently of detkit.eval."""
    ids = {g.image_id: n for n, g in enumerate(gts, start=1)}
    anns, results = [], []
    for g in gts:
        for (x0, y0, x1, y1), label in zip(g.boxes, g.labels):
            anns.append({"id": len(anns) + 1, "image_id": ids[g.image_id], "category_id": int(label),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    for d in dets:
        for (x0, y0, x1, y1), label, score in zip(d.boxes, d.labels, d.scores):
            results.append({"image_id": ids[d.image_id], "category_id": int(label),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": n} for n in ids.values()], "annotations": anns,
                           "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [10_000]
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, 0]  # [recall thresholds, classes]
    return {c: float(precision[:, k].mean()) for k, c in enumerate(ev.params.catIds)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pycocotools_at_iou_05(seed):
    gts, dets = random_dataset(seed)
    ours = voc_average_precision(gts, dets, class_ids=[1, 2])
    theirs = pycocotools_ap50(gts, dets)
    assert 0.2 < ours.map < 0.95  # a non-trivial case, not all hits or all misses
    # Same matching, same curve, same 101-point interpolation: identical up to float rounding.
    for c in (1, 2):
        assert ours.per_class[c].ap_coco101 == pytest.approx(theirs[c], abs=1e-9)
    assert ours.map_coco101 == pytest.approx(np.mean(list(theirs.values())), abs=1e-9)
    # VOC's all-point area and COCO's 101-point sampling of the same curve differ only by where the
    # precision envelope is sampled, which is small for a curve with ~100 points.
    assert ours.map == pytest.approx(ours.map_coco101, abs=0.02)
