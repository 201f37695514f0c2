"""Runs written by an earlier detkit (commit 6626f52, two tiny runs: single-level and fpn) load and give the
detections that version gave: same label, IoU >= 0.98, score within 0.01, both ways."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from detkit.inference.detector import Detector

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures", "runs_6626f52")
IMAGES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "detkit", "data", "raccoon", "images")


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _unmatched(source: list[dict], target: list[dict]) -> list[dict]:
    """The detections of `source` that no detection of `target` reproduces (each used once)."""
    free = list(target)
    missing = []
    for obj in source:
        match = next((o for o in free if o["label"] == obj["label"] and abs(o["prob"] - obj["prob"]) <= 0.01
                      and _iou(o["bbox"], obj["bbox"]) >= 0.98), None)
        if match is None:
            missing.append(obj)
        else:
            free.remove(match)
    return missing


@pytest.mark.parametrize("run", ["single_level", "fpn"])
def test_a_run_of_an_earlier_version_predicts_as_it_did(run):
    detector = Detector.from_checkpoint(os.path.join(FIXTURES, run))
    assert (detector.model.fpn is not None) == (run == "fpn")
    with open(os.path.join(FIXTURES, f"{run}.jsonl"), encoding="utf-8") as fh:
        expected = [json.loads(line) for line in fh]
    assert sum(len(r["objects"]) for r in expected) == 40
    for record in expected:
        image = np.asarray(Image.open(os.path.join(IMAGES, os.path.basename(record["file"]))).convert("RGB"))
        got = [d.to_json() for d in detector.predict(image, min_prob=0.05, max_detections=20)]
        assert not _unmatched(record["objects"], got), record["file"]
        assert not _unmatched(got, record["objects"]), record["file"]
