"""Evaluating a model on a dataset whose classes are a subset of the model's, matched by name."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from detkit.eval.class_map import apply_label_map, label_map


def test_equal_names_need_no_map():
    assert label_map(["cat", "dog"], ["cat", "dog"]) is None


def test_map_by_name_in_the_datasets_order_skipping_unused_slots():
    mapping = label_map(["person", "N/A", "dog", "cat"], ["cat", "person"])
    # model label 1 (person) -> dataset 2, N/A -> 0, dog -> 0 (not in the dataset), cat -> 1
    assert mapping.tolist() == [0, 2, 0, 0, 1]


def test_a_dataset_class_the_model_lacks_is_named():
    with pytest.raises(ValueError, match="class 'zebra' is not one the model detects"):
        label_map(["person", "dog"], ["dog", "zebra"])
    with pytest.raises(ValueError, match="'N/A'"):  # an unused slot is not a class
        label_map(["person", "N/A"], ["N/A"])


def test_apply_drops_detections_of_classes_the_dataset_lacks():
    mapping = np.array([0, 2, 0, 1])
    boxes = np.arange(16, dtype=np.float64).reshape(4, 4)
    b, lab, s = apply_label_map(mapping, boxes, np.array([1, 2, 3, 1]), np.array([0.9, 0.8, 0.7, 0.6]))
    assert lab.tolist() == [2, 1, 2] and s.tolist() == [0.9, 0.7, 0.6]
    np.testing.assert_array_equal(b, boxes[[0, 2, 3]])
    same = apply_label_map(None, boxes, np.array([1, 2, 3, 1]), np.array([0.9, 0.8, 0.7, 0.6]))
    assert same[1].tolist() == [1, 2, 3, 1]


def test_a_coco_model_evaluates_on_a_dataset_of_two_coco_classes(tiny_run, tmp_path, monkeypatch):
    from pretrained import tiny_torchvision
    from pretrained.pth_writer import write_pth

    from detkit.eval.evaluator import Evaluator, Target
    from detkit.eval.runner import collect
    from detkit.pretrained.classes import COCO_CLASSES
    from detkit.pretrained.importer import import_checkpoint

    tiny_torchvision.install(monkeypatch)
    state = tiny_torchvision.tiny_state(90)
    state["cls.bias"][:] = -10.0
    state["cls.bias"][COCO_CLASSES.index("dog") + 1] = 10.0  # every box is a dog or a toothbrush
    state["cls.bias"][COCO_CLASSES.index("toothbrush") + 1] = 10.0
    pth = str(tmp_path / "coco.pth")
    write_pth(pth, state)
    run = import_checkpoint(pth, str(tmp_path / "coco-run"))
    data = tmp_path / "data"
    shutil.copytree(tiny_run["dataset_dir"], data)
    (data / "classes.json").write_text(json.dumps(["person", "dog"]))  # the raccoons (label 1) become persons

    evaluator = Evaluator(run)
    messages = []
    names, mapping = evaluator.check_classes(str(data), messages.append)
    assert names == ["person", "dog"] and "matching its 2 classes" in messages[0]
    _, raw = collect(evaluator.detector.model, evaluator.config, str(data), "test", show_progress=False)
    raw_labels = np.concatenate([d.labels for d in raw])
    dogs = int((raw_labels == COCO_CLASSES.index("dog") + 1).sum())
    assert dogs > 0 and (raw_labels == 90).sum() > 0  # both kinds detected before mapping

    result = evaluator.evaluate(evaluator.loaded_prefix, Target(str(data), "test", "test"), show_progress=False)
    assert list(result["per_class"]) == ["person", "dog"]
    assert result["num_detections"] == dogs  # toothbrushes dropped, dogs kept
    assert result["per_class"]["dog"]["num_gt"] == 0 and result["per_class"]["person"]["num_gt"] > 0

    # The report of a COCO model on that dataset speaks of the dataset's classes.
    (reported,) = evaluator.evaluate_checkpoint(evaluator.first_entry(), [Target(str(data), "test", "test")],
                                                lambda r: None, show_progress=False, record=False,
                                                report_dir=str(tmp_path / "report"))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["confusion"]["labels"] == ["person", "dog", "background"]
    assert sum(report["confusion"]["matrix"][0]) == result["per_class"]["person"]["num_gt"]
    assert report["per_class"]["dog"]["ap50"] is None and reported["num_detections"] == dogs
