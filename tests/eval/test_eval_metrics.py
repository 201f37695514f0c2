"""evaluate(): the combined JSON-serialisable dict; data model validation; the central-box baseline."""
import json

import numpy as np
import pytest

from detkit.eval.metrics import Detections, GroundTruth, central_box_baseline, evaluate

A = [10.0, 10.0, 60.0, 60.0]
B = [100.0, 100.0, 300.0, 300.0]
KEYS = {
    "map50", "map50_voc07", "coco_ap", "coco_ap50", "coco_ap75", "coco_ap_small", "coco_ap_medium",
    "coco_ap_large", "coco_ar1", "coco_ar10", "coco_ar100", "per_class", "num_images", "num_detections",
    "threshold", "threshold_rule", "confusion", "ignored_detections",
}


def gts():
    return [
        GroundTruth("a", [A, B], [1, 2], None, None, 400, 300),
        GroundTruth("b", [B], [1], None, None, 400, 300),
        GroundTruth("c", [], [], None, None, 400, 300),
    ]


def test_perfect_detections():
    dets = [Detections(g.image_id, g.boxes, g.labels, np.full(len(g.boxes), 0.9)) for g in gts()]
    result = evaluate(gts(), dets, ["raccoon", "dog"])
    assert KEYS <= set(result)
    json.loads(json.dumps(result, allow_nan=False))  # strictly JSON-serialisable
    assert result["map50"] == 1.0 and result["map50_voc07"] == 1.0
    assert result["coco_ap"] == pytest.approx(1.0) and result["coco_ar100"] == pytest.approx(1.0)
    assert result["per_class"] == {
        "raccoon": {"ap": 1.0, "ap_voc07": 1.0, "num_gt": 2, "ap50": 1.0, "tp": 2, "fp": 0, "fn": 0},
        "dog": {"ap": 1.0, "ap_voc07": 1.0, "num_gt": 1, "ap50": 1.0, "tp": 1, "fp": 0, "fn": 0},
    }
    assert result["num_images"] == 3 and result["num_detections"] == 3
    assert result["threshold"] == 0.9 and result["threshold_rule"] == "best F1 over all classes"
    assert result["confusion"] == {"labels": ["raccoon", "dog", "background"],
                                   "matrix": [[2, 0, 0], [0, 1, 0], [0, 0, 0]]}


def test_missing_detection_entries_count_as_no_detections():
    result = evaluate(gts(), [Detections("a", [A], [1], [0.9])], ["raccoon", "dog"])
    assert result["per_class"]["raccoon"]["ap"] == pytest.approx(0.5)
    assert result["per_class"]["dog"]["ap"] == 0.0
    assert result["map50"] == pytest.approx(0.25)
    assert result["num_detections"] == 1


def test_no_detections_at_all():
    result = evaluate(gts(), [], ["raccoon", "dog"])
    json.dumps(result, allow_nan=False)
    assert result["map50"] == 0.0 and result["coco_ap"] == 0.0 and result["num_detections"] == 0


def test_class_without_gt_reports_none_and_is_left_out_of_the_mean():
    g = [GroundTruth("a", [A], [1], None, None, 400, 300)]
    result = evaluate(g, [Detections("a", [A, B], [1, 2], [0.9, 0.8])], ["raccoon", "dog"])
    assert result["per_class"]["dog"] == {"ap": None, "ap_voc07": None, "num_gt": 0, "ap50": None, "tp": 0,
                                          "fp": 0, "fn": 0}  # threshold 0.9, the best F1
    assert result["map50"] == 1.0
    json.dumps(result, allow_nan=False)


def test_stricter_threshold():
    g = [GroundTruth("a", [B], [1], None, None, 400, 300)]
    shifted = [Detections("a", [[150.0, 100.0, 350.0, 300.0]], [1], [0.9])]  # IoU 0.6
    assert evaluate(g, shifted, ["raccoon"])["map50"] == 1.0
    strict = evaluate(g, shifted, ["raccoon"], iou_threshold=0.7)
    assert strict["map70"] == 0.0
    # The counts stay at IoU 0.5, as their name says.
    assert strict["per_class"]["raccoon"]["ap50"] == 1.0 and strict["per_class"]["raccoon"]["tp"] == 1


def test_min_prob_sets_the_threshold_of_the_counts():
    dets = [Detections("a", [A, B], [1, 2], [0.9, 0.3]), Detections("b", [B], [1], [0.6])]
    result = evaluate(gts(), dets, ["raccoon", "dog"], min_prob=0.5)
    assert result["threshold"] == 0.5 and result["threshold_rule"].startswith("given")
    assert result["confusion"]["matrix"] == [[2, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert result["per_class"]["dog"]["fn"] == 1


def test_labels_outside_class_names_are_rejected():
    with pytest.raises(ValueError, match="outside 1..2"):
        evaluate(gts(), [Detections("a", [A], [3], [0.9])], ["raccoon", "dog"])
    with pytest.raises(ValueError, match="outside 1..1"):
        evaluate(gts(), [], ["raccoon"])


def test_data_model_normalises_and_validates():
    g = GroundTruth("x", [], [], width=10, height=10)
    assert g.boxes.shape == (0, 4) and g.difficult.dtype == bool and g.iscrowd.shape == (0,)
    d = Detections("x", [[1, 2, 3, 4]], [1], [0.5])
    assert d.boxes.dtype == np.float64 and d.labels.dtype == np.int64
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        GroundTruth("x", [[1, 2, 3]], [1])
    with pytest.raises(ValueError, match="one per box"):
        Detections("x", [[1, 2, 3, 4]], [1, 1], [0.5])


def test_central_box_baseline_box():
    (baseline,) = central_box_baseline([GroundTruth("x", [], [], width=100, height=50)])
    assert baseline.image_id == "x"
    np.testing.assert_allclose(baseline.boxes, [[10, 5, 90, 45]])
    assert baseline.labels.tolist() == [1] and baseline.scores.tolist() == [1.0]


def test_central_box_baseline_multi_class():
    g = [GroundTruth("x", [A], [2], width=100, height=50), GroundTruth("y", [A], [3], width=200, height=200)]
    every_class = central_box_baseline(g, fraction=0.5, label=[1, 2, 3])
    assert every_class[0].labels.tolist() == [1, 2, 3]
    np.testing.assert_allclose(every_class[1].boxes, [[50, 50, 150, 150]] * 3)
    present = central_box_baseline(g, label=None)
    assert present[0].labels.tolist() == [2, 3]


def test_central_box_baseline_scores_below_a_real_detector():
    g = [GroundTruth("x", [[0, 0, 20, 20]], [1], width=100, height=100)]
    result = evaluate(g, central_box_baseline(g), ["raccoon"])
    assert result["map50"] == 0.0


def test_central_box_baseline_needs_image_size():
    with pytest.raises(ValueError, match="size"):
        central_box_baseline([GroundTruth("x", [], [])])
    with pytest.raises(ValueError, match="fraction"):
        central_box_baseline([], fraction=0.0)
