"""Size bins from the data's own box sizes, and AP within each bin by COCO's rule."""
import numpy as np
import pytest

from detkit.eval.records import Detections, GroundTruth
from detkit.eval.size_bins import ap_by_size, bin_names, box_sizes, size_edges


def square(x, side):
    return [x, 0.0, x + side, float(side)]


SIDES = [10, 20, 30, 40, 50, 60]


def data():
    gts = [GroundTruth("x", [square(100 * i, s) for i, s in enumerate(SIDES)], [1] * 6, width=700, height=100)]
    # Small and large boxes found, medium ones missed; a false alarm 55 px wide (large) scores highest.
    found = [square(100 * i, s) for i, s in enumerate(SIDES) if s not in (30, 40)]
    dets = [Detections("x", [square(650, 55)] + found, [1] * 5, [0.99, 0.9, 0.8, 0.7, 0.6])]
    return gts, dets


def test_box_sizes_and_edges_from_the_data():
    np.testing.assert_allclose(box_sizes([[0, 0, 4, 9], [0, 0, 10, 10]]), [6.0, 10.0])
    gts, _ = data()
    # Terciles of 10..60: 26.7 and 43.3, rounded to whole pixels.
    assert size_edges(gts) == [27.0, 43.0]
    same = [GroundTruth("y", [square(0, 30)] * 4, [1] * 4, width=100, height=100)]
    assert size_edges(same) == []  # one size: one bin, not empty ones
    assert size_edges([GroundTruth("z", [], [], width=1, height=1)]) == []
    assert bin_names(3) == ["small", "medium", "large"] and bin_names(1) == ["all"]


def test_ap_within_each_bin():
    gts, dets = data()
    small, medium, large = ap_by_size(gts, dets, [1], [27.0, 43.0])
    assert (small.low, small.high, medium.low, large.high) == (0.0, 27.0, 27.0, float("inf"))
    assert small.num_gt == {1: 2} and medium.num_gt == {1: 2} and large.num_gt == {1: 2}
    # The large false alarm is ignored outside its bin; inside it, it ranks first: precision 1/2, 2/3.
    assert small.ap[1] == 1.0 and medium.ap[1] == 0.0
    assert large.ap[1] == pytest.approx(2 / 3)
    assert small.mean_ap == 1.0


def test_a_bin_without_gts_has_no_ap():
    gts = [GroundTruth("x", [square(0, 10)], [1], width=100, height=100)]
    (low, high) = ap_by_size(gts, [], [1, 2], [50.0])
    assert low.ap == {1: 0.0} and low.num_gt == {1: 1, 2: 0}
    assert high.ap == {} and high.mean_ap is None
