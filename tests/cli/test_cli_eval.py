"""`detkit eval`: metrics equal evaluate_model's, JSON keys, table, TensorBoard, metrics.json, --watch."""
from __future__ import annotations

import glob
import json
import os
import shutil
import threading
import time

import pytest
from click.testing import CliRunner

from detkit.errors import DetkitError


def invoke(*args):
    from detkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def json_lines(result) -> list[dict]:
    assert result.exit_code == 0, (result.output, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> str:
    """A private copy of the tiny run (eval writes metrics.json and eval_<split>/ into it)."""
    target = tmp_path / "jobs" / "tiny"
    shutil.copytree(tiny_run["run_dir"], target)
    return str(target)


def _scalars(event_dir: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(event_dir, size_guidance={"tensors": 0})
    acc.Reload()
    out = {}
    for tag in [t for t in acc.Tags()["tensors"] if t.startswith("metrics/")]:  # not the PR curves or images
        import tensorflow as tf

        out[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return out


def test_json_metrics_equal_evaluate_model_and_are_recorded(tiny_run, run_copy):
    from detkit import Detector
    from detkit.eval.runner import evaluate_model

    result = invoke("eval", "--checkpoint", run_copy, "--json", "--no-progress")
    (metrics,) = json_lines(result)
    for key in ("map50", "map50_voc07", "coco_ap", "coco_ap50", "coco_ap75", "per_class", "checkpoint", "step",
                "num_images", "num_detections"):
        assert key in metrics, key
    assert metrics["step"] == 6 and metrics["checkpoint"].endswith("ckpt-6")
    assert metrics["split"] == "test" and metrics["num_images"] == 40
    assert set(metrics["per_class"]) == {"raccoon"} and metrics["per_class"]["raccoon"]["num_gt"] == 44

    detector = Detector.from_checkpoint(run_copy)
    expected = evaluate_model(detector.model, detector.config, tiny_run["dataset_dir"], "test",
                              detector.class_names, show_progress=False)
    per_class = expected.pop("per_class")
    assert metrics["confusion"] == expected.pop("confusion")
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    for name, values in per_class.items():
        assert metrics["per_class"][name] == pytest.approx(values, abs=1e-12), name

    recorded = json.load(open(os.path.join(run_copy, "metrics.json")))
    assert recorded["ckpt-6"]["step"] == 6
    assert recorded["ckpt-6"]["splits"]["test"]["map50"] == pytest.approx(metrics["map50"])
    scalars = _scalars(os.path.join(run_copy, "eval_test"))
    assert scalars["metrics/map50"] == [(6, pytest.approx(metrics["map50"], abs=1e-6))]
    assert "metrics/coco_ap" in scalars and "metrics/ap/raccoon" in scalars


def test_map_is_named_by_its_iou_threshold(run_copy):
    result = invoke("eval", "--checkpoint", run_copy, "--json", "--no-progress", "-o", "eval.iou_threshold=0.75")
    (metrics,) = json_lines(result)
    assert metrics["iou_threshold"] == 0.75 and "map75" in metrics and "map75_voc07" in metrics
    assert "map50" not in metrics and "map50_voc07" not in metrics
    recorded = json.load(open(os.path.join(run_copy, "metrics.json")))["ckpt-6"]["splits"]["test"]
    assert recorded["map75"] == pytest.approx(metrics["map75"]) and "map50" not in recorded
    scalars = _scalars(os.path.join(run_copy, "eval_test"))
    assert scalars["metrics/map75"] == [(6, pytest.approx(metrics["map75"], abs=1e-6))]
    assert not [tag for tag in scalars if tag.startswith("metrics/map50")]
    table = invoke("eval", "--checkpoint", run_copy, "--no-progress", "--no-record", "-o", "eval.iou_threshold=0.75")
    assert "AP@0.75" in table.stdout


def test_table_older_checkpoint_and_several_splits(tiny_run, run_copy):
    result = invoke("eval", "--checkpoint", os.path.join(run_copy, "checkpoints", "ckpt-3"), "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    text = result.stdout
    assert "ckpt-3 (step 3)" in text and "raccoon" in text and "mean" in text and "COCO" in text
    assert "AP50" in text and "AR100" in text

    # Two (dataset dir, split) pairs in one call, with --no-record: nothing written to the run.
    other = os.path.join(os.path.dirname(run_copy), "..", "other_dataset")
    shutil.copytree(tiny_run["dataset_dir"], other)
    result = invoke("eval", "--checkpoint", run_copy, "--json", "--no-progress", "--no-record",
                    "--dataset-dir", tiny_run["dataset_dir"], "--split", "test",
                    "--dataset-dir", other, "--split", "test")
    first, second = json_lines(result)
    assert first["dataset_dir"] == tiny_run["dataset_dir"] and second["dataset_dir"] == other
    assert first["label"] == "test" and second["label"] == "other_dataset_test"
    assert first["map50"] == pytest.approx(second["map50"])
    assert set(json.load(open(os.path.join(run_copy, "metrics.json")))) == {"ckpt-3"}

    result = invoke("eval", "--checkpoint", run_copy, "--split", "a", "--split", "b",
                    "--dataset-dir", "x", "--dataset-dir", "y", "--dataset-dir", "z")
    assert result.exit_code == 2 and "paired in order" in result.output


def test_config_and_errors(tiny_run, tmp_path):
    result = invoke("eval")
    assert isinstance(result.exception, DetkitError) and "detkit train -c config.yml" in str(result.exception)
    result = invoke("eval", "--checkpoint", tmp_path / "no-run")
    assert isinstance(result.exception, DetkitError) and "no-run" in str(result.exception)
    result = invoke("eval", "--checkpoint", tiny_run["run_dir"], "--split", "nosuchsplit", "--no-record")
    assert isinstance(result.exception, DetkitError) and "nosuchsplit" in str(result.exception)


def test_watch_evaluates_each_new_checkpoint(tiny_run, run_copy):
    ckpt_dir = os.path.join(run_copy, "checkpoints")

    def add_checkpoint_when_first_is_done():
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(run_copy, "metrics.json")) and time.time() < deadline:
            time.sleep(0.1)
        for path in glob.glob(os.path.join(ckpt_dir, "ckpt-6.*")):
            shutil.copy(path, path.replace("ckpt-6.", "ckpt-9."))
        with open(os.path.join(ckpt_dir, "checkpoint"), "w") as fh:
            fh.write('model_checkpoint_path: "ckpt-9"\nall_model_checkpoint_paths: "ckpt-6"\n'
                     'all_model_checkpoint_paths: "ckpt-9"\n')

    thread = threading.Thread(target=add_checkpoint_when_first_is_done)
    thread.start()
    try:
        result = invoke("eval", "--checkpoint", run_copy, "--json", "--no-progress", "--watch",
                        "--interval", "0.2", "--timeout", "3", "--report", os.path.join(run_copy, "..", "report"))
    finally:
        thread.join()
    out = json_lines(result)
    assert [m["step"] for m in out] == [6, 9]
    assert out[0]["map50"] == pytest.approx(out[1]["map50"])  # same weights under another name
    assert "stopped watching" in result.stderr
    assert set(json.load(open(os.path.join(run_copy, "metrics.json")))) == {"ckpt-6", "ckpt-9"}
    # The report is the newest checkpoint's; TensorBoard has the PR curves of both.
    assert json.load(open(os.path.join(run_copy, "..", "report", "report.json")))["step"] == 9
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_copy, "eval_test"), size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("pr_curve/raccoon/pr_curves")] == [6, 9]
