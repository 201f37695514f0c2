"""`detkit checkpoint export --format openvino`: the exported model gives TensorFlow's detections, and predict,
eval and the Detector API take its directory as they take a run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image


def invoke(*args):
    from detkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def matched(ref, out, iou=0.98, score=0.01) -> float:
    """Share of ref's detections (boxes, scores, labels) that out has: same label, IoU >= iou, score within."""
    from detkit.eval.voc_map import iou_matrix

    boxes, scores, labels = ref
    if not len(scores):
        return 1.0
    hits = 0
    for b, s, lab in zip(boxes, scores, labels):
        same = (out[2] == lab) & (np.abs(out[1] - s) <= score)
        if same.any() and iou_matrix(b[None], out[0][same]).max() >= iou:
            hits += 1
    return hits / len(scores)


def photos(raccoon_dir, count=3):
    return [np.asarray(Image.open(os.path.join(raccoon_dir, "images", f"raccoon-{i}.jpg")).convert("RGB"))
            for i in range(1, count + 1)]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("openvino") / "tiny-ov"
    result = ok(invoke("checkpoint", "export", tiny_run["run_dir"], "--format", "openvino", "--output", out,
                       "--min-prob", "0.01"))
    assert result.stdout.strip() == str(out)
    return str(out)


def test_the_export_gives_tensorflows_detections(exported, tiny_run, raccoon_dir):
    from detkit import Detector
    from detkit.inference.openvino import OpenVINODetector

    assert sorted(os.listdir(exported)) == ["classes.json", "config.yml", "export.json", "model.bin", "model.xml"]
    manifest = json.loads(open(os.path.join(exported, "export.json")).read())
    assert manifest["format"] == "openvino" and manifest["step"] == tiny_run["step"] and manifest["min_prob"] == 0.01
    tf_detector = Detector.from_checkpoint(tiny_run["run_dir"])
    ov_detector = Detector.from_checkpoint(exported)
    assert isinstance(ov_detector, OpenVINODetector) and ov_detector.class_names == ["raccoon"]
    for image in photos(raccoon_dir):
        ref, out = tf_detector.raw_detections(image), ov_detector.raw_detections(image)
        assert len(ref[1]) > 0
        assert matched(ref, out) >= 0.98 and matched(out, ref) >= 0.98
    # predict's filters come from the exported config (min_prob 0.01 as exported).
    assert all(d.score >= 0.01 for d in ov_detector.predict(photos(raccoon_dir, 1)[0]))


def test_the_fpn_model_converts_and_gives_its_detections(tmp_path, raccoon_dir):
    """The pyramid's parts (pooled level, multi-level RoIAlign, per-level proposals) in OpenVINO, random weights."""
    import tensorflow as tf

    from detkit.config import load_config
    from detkit.config.tiny import tiny_model_overrides
    from detkit.inference.openvino import COMPILE_PROPERTIES, convert, openvino_module, traced_detector
    from detkit.models.build import build_detector
    from detkit.models.faster_rcnn import detections_in_order

    overrides = [o for o in tiny_model_overrides() if not o.startswith("model.anchors.sizes")]
    cfg = load_config([], overrides + ["model.architecture=fpn", "model.fpn.channels=16",
                                       "model.postprocess.score_threshold=0.0"])
    model = build_detector(cfg, 3)
    image = photos(raccoon_dir, 1)[0]
    out = model({"image": tf.constant(image[None]), "image_hw": tf.constant([image.shape[:2]])}, training=False)
    ref = tuple(t.numpy() for t in detections_in_order(out, 0))
    compiled = openvino_module().Core().compile_model(convert(traced_detector(model), str(tmp_path)), "CPU",
                                                      COMPILE_PROPERTIES)
    result = compiled.create_infer_request().infer({"image": image})
    got = tuple(np.asarray(result[compiled.output(name)]) for name in ("boxes", "scores", "labels"))
    assert len(ref[1]) > 10
    assert matched(ref, got) >= 0.98 and matched(got, ref) >= 0.98


def test_predict_and_eval_take_the_export(exported, tiny_run, tmp_path):
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(image)
    result = ok(invoke("predict", image, "--checkpoint", exported))
    assert json.loads(result.stdout.strip().splitlines()[-1])["file"].endswith("photo.jpg")

    def ap(checkpoint):
        text = ok(invoke("eval", "--checkpoint", checkpoint, "--dataset-dir", tiny_run["dataset_dir"], "--split",
                         "test", "--json", "--no-record", "--no-progress")).stdout
        return json.loads(text.strip().splitlines()[-1])

    from_tf, from_ov = ap(tiny_run["run_dir"]), ap(exported)
    assert from_ov["step"] == from_tf["step"] and abs(from_ov["map50"] - from_tf["map50"]) <= 0.01
    assert not os.path.exists(os.path.join(exported, "metrics.json"))  # nothing is recorded in an export


def test_an_export_refuses_what_it_did_not_write_and_watching(exported, tiny_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("checkpoint", "export", tiny_run["run_dir"], "--format", "openvino", "--output", mine,
                    "--overwrite")
    assert result.exit_code != 0 and "not an earlier `detkit checkpoint export`" in result.output
    assert (mine / "notes.txt").read_text() == "keep me"
    result = invoke("eval", "--checkpoint", exported, "--dataset-dir", tiny_run["dataset_dir"], "--split", "test",
                    "--no-progress", "--watch")
    assert result.exit_code != 0 and "exported model, which gets no new checkpoints" in result.output
