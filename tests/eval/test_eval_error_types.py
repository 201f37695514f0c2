"""TIDE error types and the AP each costs: one hand-made image, then properties on random data."""
import numpy as np
import pytest
from test_eval_voc_map import pycocotools_ap50, random_dataset

from detkit.eval.error_types import BKG, BOTH, CLS, DUPE, ERROR_TYPES, LOC, NO_ERROR, classify_image, error_costs
from detkit.eval.matching import match_images
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import voc_average_precision


def hand_case():
    gts = [GroundTruth("x", [[0, 0, 10, 10], [100, 0, 110, 10], [300, 0, 310, 10]], [1, 2, 1], width=600, height=50)]
    dets = [Detections("x", [
        [500, 0, 510, 10],  # a, 0.95: on nothing -> background
        [0, 0, 10, 10],     # a, 0.9: true positive
        [0, 0, 10, 10],     # a, 0.8: the same gt again -> duplicate
        [0, 0, 10, 4],      # a, 0.7: IoU 0.4 with a -> localisation (its gt is found: not a fixer)
        [100, 0, 110, 10],  # a, 0.6: on b -> classification (b is free: fixing it finds b)
        [100, 0, 110, 3],   # b, 0.5: IoU 0.3 with b -> localisation (b already pointed at by 0.6)
        [0, 0, 10, 3],      # b, 0.4: IoU 0.3 with a, another class -> both
        [200, 0, 210, 10],  # b, 0.3: background
    ], [1, 1, 1, 1, 1, 2, 2, 2], [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])]
    return gts, dets


def test_each_type_on_a_hand_made_image():
    gts, dets = hand_case()
    (match,) = match_images(gts, dets)
    errors = classify_image(match)
    assert errors.det_type.tolist() == [BKG, NO_ERROR, DUPE, LOC, CLS, LOC, BOTH, BKG]
    assert errors.det_target.tolist() == [-1, -1, -1, 0, 1, 1, -1, -1]
    assert errors.missed.tolist() == [False, False, True]  # b is pointed at by errors, the gt at 300 by none


def test_costs_on_the_hand_made_image():
    gts, dets = hand_case()
    matches = match_images(gts, dets)
    costs = error_costs(matches, [classify_image(m) for m in matches], [1, 2])
    # a: background 0.95 then the hit: precision 1/2 at recall 1/2 -> AP 0.25; b: no hit -> 0.
    assert costs.ap == {1: pytest.approx(0.25), 2: 0.0} and costs.mean_ap == pytest.approx(0.125)
    expected = {
        "classification": {1: 0.0, 2: 1.0},  # the 0.6 detection becomes b's first hit: b's AP 1
        "localisation": {1: 0.0, 2: 0.0},   # no fixer: both removed, and they trail the hit
        "both": {1: 0.0, 2: 0.0},
        "duplicate": {1: 0.0, 2: 0.0},
        "background": {1: 0.25, 2: 0.0},    # a's hit comes first: AP 0.5
        "missed": {1: 0.25, 2: 0.0},        # a has 1 gt left to find: precision 1/2 at recall 1
    }
    for name in ERROR_TYPES:
        assert costs.cost[name] == pytest.approx(expected[name]), name
    assert costs.mean_cost["classification"] == pytest.approx(0.5)
    for c in (1, 2):
        assert sum(costs.cost[name][c] for name in ERROR_TYPES) <= 1.0 - costs.ap[c]
    # Shares: a's AP is 0.25 as it is, 0.5 with background or missed fixed, 1 with both (nothing else moves it):
    # each gets (0.25 + 0.5) / 2. b's AP is 1 exactly when classification is fixed.
    shares = {name: {1: 0.0, 2: 0.0} for name in ERROR_TYPES}
    shares["background"][1] = shares["missed"][1] = 0.375
    shares["classification"][2] = 1.0
    for name in ERROR_TYPES:
        assert costs.share[name] == pytest.approx(shares[name], abs=1e-12), name
    assert costs.count["localisation"] == {1: 1, 2: 1} and costs.count["missed"] == {1: 1, 2: 0}
    assert costs.count["background"] == {1: 1, 2: 1} and costs.count["both"] == {1: 0, 2: 1}


def test_a_class_whose_every_gt_is_missed_costs_all_its_ap():
    gts = [GroundTruth("x", [[0, 0, 10, 10]], [1], width=50, height=50)]
    matches = match_images(gts, [Detections("x", [[30, 30, 40, 40]], [1], [0.9])])
    costs = error_costs(matches, [classify_image(m) for m in matches], [1])
    assert costs.ap[1] == 0.0 and costs.cost["missed"][1] == 1.0 and costs.cost["background"][1] == 0.0


@pytest.mark.parametrize("seed", [0, 2, 3, 4])
def test_ap_matches_detkit_and_pycocotools_and_each_cost_fits_in_what_is_missing(seed):
    gts, dets = random_dataset(seed, num_images=30)
    matches = match_images(gts, dets)
    costs = error_costs(matches, [classify_image(m) for m in matches], [1, 2])
    voc = voc_average_precision(gts, dets, [1, 2])
    coco = pycocotools_ap50(gts, dets)
    for c in (1, 2):
        assert costs.ap[c] == voc.per_class[c].ap  # the same AP code, the same number
        assert costs.ap[c] == pytest.approx(coco[c], abs=0.02)
        values = [costs.cost[name][c] for name in ERROR_TYPES]
        assert min(values) >= 0.0
        assert max(values) <= 1.0 - costs.ap[c]
        shares = [costs.share[name][c] for name in ERROR_TYPES]
        assert min(shares) >= 0.0 and sum(shares) == pytest.approx(1.0 - costs.ap[c], abs=1e-12)
    assert all(sum(costs.count[name].values()) > 0 for name in ERROR_TYPES)  # every kind of error occurs


def test_costs_overlap_but_shares_add_up_to_what_is_missing():
    """TIDE fixes one type at a time: two fixes together can gain less than the two apart, so on rare data
    the costs add up to a little more than 1 - AP (here 0.395 > 0.389 for class 1, seed 143); the shares
    never do."""
    gts, dets = random_dataset(143, num_images=10)
    matches = match_images(gts, dets)
    costs = error_costs(matches, [classify_image(m) for m in matches], [1, 2])
    total = sum(costs.cost[name][1] for name in ERROR_TYPES)
    assert total == pytest.approx(0.3952, abs=1e-4) and 1.0 - costs.ap[1] == pytest.approx(0.3889, abs=1e-4)
    assert sum(costs.share[name][1] for name in ERROR_TYPES) == pytest.approx(1.0 - costs.ap[1], abs=1e-12)
    assert costs.share["localisation"][1] < costs.cost["localisation"][1]  # it overlaps background
