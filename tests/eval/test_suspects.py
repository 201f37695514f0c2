"""`detkit dataset suspects`: hand-computed scores of each kind, and the command on a trained run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from detkit.eval.records import Detections, GroundTruth
from detkit.eval.suspects import image_suspects, rank_suspects


def _gt(boxes, labels):
    return GroundTruth("0:a.jpg", np.array(boxes, float), np.array(labels))


def _det(boxes, labels, scores):
    return Detections("0:a.jpg", np.array(boxes, float).reshape(-1, 4), np.array(labels), np.array(scores))


def test_a_confident_unmatched_detection_is_a_missing_box():
    gt = _gt([[0, 0, 10, 10]], [1])
    det = _det([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 5], [50, 50, 60, 60]], [1, 2, 1, 1], [0.9, 0.8, 0.7, 0.4])
    found = {(s.kind, s.model_box): s for s in image_suspects(gt, det, 0, "a.jpg")}
    # [20,0,30,10] overlaps no box: 0.8 x (1 - 0). [0,0,10,5] has IoU 0.5 with the box: matched, not missing.
    # [50,50,60,60] scores 0.4, under 0.5: not confident enough to say an object is there.
    assert list(found) == [("missing_box", (20.0, 0.0, 30.0, 10.0))]
    assert found[("missing_box", (20.0, 0.0, 30.0, 10.0))].score == pytest.approx(0.8)


def test_a_box_the_model_calls_another_class_is_a_swapped_label():
    gt = _gt([[0, 0, 10, 10]], [1])
    det = _det([[0, 0, 10, 9], [0, 0, 10, 10]], [2, 1], [0.9, 0.2])
    (s,) = image_suspects(gt, det, 3, "a.jpg")
    assert (s.kind, s.label, s.model_label, s.image_index) == ("swapped_label", 1, 2, 3)
    assert s.score == pytest.approx(0.9 * (1 - 0.2))


def test_a_box_the_model_scores_low_is_a_wrong_box_placed_where_the_model_sees_it():
    gt = _gt([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]], [1, 1, 1])
    det = _det([[5, 0, 15, 10], [100, 100, 110, 110], [200, 200, 210, 210]], [1, 1, 1], [0.8, 0.3, 0.6])
    found = {s.box: s for s in image_suspects(gt, det, 0, "a.jpg")}
    # Box 1: no match (IoU 1/3 with the detection nearby, score 0.8): (1 - 0) x (0.5 + 0.5 x 0.8).
    near = found[(0.0, 0.0, 10.0, 10.0)]
    assert (near.kind, near.model_box) == ("wrong_box", (5.0, 0.0, 15.0, 10.0))
    assert near.score == pytest.approx(0.9)
    # Box 2: matched, but its class scores only 0.3: (1 - 0.3) x 0.5. Box 3: scores 0.6, supported.
    assert found[(100.0, 100.0, 110.0, 110.0)].score == pytest.approx(0.35)
    assert (200.0, 200.0, 210.0, 210.0) not in found
    # The missing_box candidate [5,0,15,10] is not matched at IoU 0.5 either: 0.8 x (1 - 1/3).
    ranked = rank_suspects([gt], [det])
    assert [s.kind for s in ranked] == ["wrong_box", "missing_box", "wrong_box"]
    assert ranked[1].score == pytest.approx(0.8 * 2 / 3)


def test_suspects_command_lists_ranks_and_draws(tiny_run, run_detkit, tmp_path):
    code, out, err = run_detkit("dataset", "suspects", "--checkpoint", tiny_run["run_dir"], "--split", "test",
                                "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]))
    assert {r["kind"] for r in rows} <= {"missing_box", "swapped_label", "wrong_box"}
    assert {"file", "box", "class", "image_index", "score"} <= set(rows[0])
    code, out, err = run_detkit("dataset", "suspects", "--checkpoint", tiny_run["run_dir"], "--split", "test",
                                "--top", "3", "--draw", "2", "--draw-dir", tmp_path / "drawn")
    assert code == 0 and out.splitlines()[0] == f"{len(rows)} suspects; the likeliest first:"
    assert len(out.splitlines()) == 2 + 3
    assert sorted(os.listdir(tmp_path / "drawn"))[0].startswith(f"001-{rows[0]['kind']}-")
    assert len(os.listdir(tmp_path / "drawn")) == 2
    code, _, err = run_detkit("dataset", "suspects", "--checkpoint", tiny_run["run_dir"], "--draw", "2")
    assert code == 2 and "--draw needs --draw-dir" in err
