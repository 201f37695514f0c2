"""`detkit demo` end to end: transform -> train -> checkpoint -> evaluate -> predict, in a short run."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_short_run(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "detkit", "demo", "--output", str(out), "--minutes", "0.5"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0
    # The learns-nothing baseline is scored on the same 40 held-out photos.
    assert 0.4 < metrics["baseline_map50"] < 0.8
    assert metrics["steps"] >= 1
    assert os.path.isfile(metrics["checkpoint"] + ".index")
    drawn = [p for p in os.listdir(out / "predictions") if p.endswith(".jpg")]
    assert len(drawn) == metrics["test_images"] == 40
    for name in ("summary.html", "loss_curve.png", "detections_grid.png"):
        assert (out / name).stat().st_size > 0
    lines = (out / "predictions" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 40 and "objects" in json.loads(lines[0])
    # Nothing outside the output directory.
    assert sorted(os.listdir(tmp_path)) == ["demo"]
    assert "tensorboard --logdir" in done.stderr
