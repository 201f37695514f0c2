"""The in-memory pycocotools wrapper: perfect detections, no detections, crowd/difficult, quiet stdout."""
import numpy as np
import pytest

from detkit.eval.coco_metrics import COCO_METRIC_NAMES, coco_metrics, to_xywh
from detkit.eval.metrics import Detections, GroundTruth

MEDIUM = [10.0, 10.0, 60.0, 60.0]  # 50 x 50: COCO "medium" (32^2 < area < 96^2)
LARGE = [100.0, 100.0, 300.0, 300.0]  # 200 x 200: "large"


def dataset():
    gts = [
        GroundTruth("a", [MEDIUM, LARGE], [1, 2], None, None, 400, 400),
        GroundTruth("b", [LARGE], [1], None, None, 400, 400),
    ]
    perfect = [
        Detections(g.image_id, g.boxes, g.labels, np.linspace(0.9, 0.8, len(g.boxes))) for g in gts
    ]
    return gts, perfect


def test_to_xywh():
    np.testing.assert_allclose(to_xywh([[10, 20, 40, 60]]), [[10, 20, 30, 40]])


def test_perfect_detections_give_one():
    gts, perfect = dataset()
    m = coco_metrics(gts, perfect, [1, 2])
    assert set(m) == set(COCO_METRIC_NAMES)
    for name in ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_medium", "ar_large"):
        assert m[name] == pytest.approx(1.0), name
    assert m["ap_small"] == -1.0 and m["ar_small"] == -1.0  # no small gt: undefined, pycocotools' -1


def test_no_detections_gives_zero_without_crashing():
    gts, _ = dataset()
    m = coco_metrics(gts, [], [1, 2])
    assert all(m[name] == 0.0 for name in COCO_METRIC_NAMES if "small" not in name)


def test_empty_detection_entries_give_zero():
    gts, _ = dataset()
    empty = [Detections(g.image_id, np.zeros((0, 4)), [], []) for g in gts]
    assert coco_metrics(gts, empty, [1, 2])["ap"] == 0.0


def test_halfway_boxes_count_at_05_not_at_075():
    gts = [GroundTruth("a", [LARGE], [1], None, None, 400, 400)]
    shifted = [Detections("a", [[150.0, 100.0, 350.0, 300.0]], [1], [0.9])]  # IoU 0.6
    m = coco_metrics(gts, shifted, [1])
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == 0.0


def test_difficult_and_crowd_boxes_are_ignored():
    gts = [GroundTruth("a", [MEDIUM, LARGE], [1, 1], [False, True], None, 400, 400),
           GroundTruth("b", [MEDIUM, LARGE], [1, 1], None, [False, True], 400, 400)]
    # Only the non-ignored boxes are detected, plus a detection on each ignored box: not a false positive.
    dets = [Detections(g.image_id, [LARGE, MEDIUM], [1, 1], [0.95, 0.9]) for g in gts]
    m = coco_metrics(gts, dets, [1])
    assert m["ap"] == pytest.approx(1.0)
    assert m["ap_large"] == -1.0  # every large gt is ignored


def test_pycocotools_prints_nothing(capsys):
    gts, perfect = dataset()
    coco_metrics(gts, perfect, [1, 2])
    coco_metrics(gts, [], [1, 2])
    assert capsys.readouterr().out == ""


def test_unknown_image_is_rejected():
    gts, _ = dataset()
    with pytest.raises(ValueError, match="no ground-truth entry"):
        coco_metrics(gts, [Detections("nope", [MEDIUM], [1], [0.5])], [1, 2])
