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


def refused(result) -> str:
    """The one-line error of a refused command (the CLI's main prints it as `detkit: error: ...`)."""
    from detkit.errors import DetkitError

    assert result.exit_code != 0 and isinstance(result.exception, DetkitError), (result.output, result.exception)
    return str(result.exception)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def matched(ref, out, cap, iou=0.98, score=0.01) -> float:
    """Share of ref's detections (boxes, scores, labels) that out has: same label, IoU >= iou, score within.

    When out holds `cap` detections (its per-class or per-image cap), ref's detections within `score` of out's
    lowest are left out: near-equal scores at the cap may fall on either side of it.
    """
    from detkit.eval.voc_map import iou_matrix

    floor = out[1].min() + score if len(out[1]) >= cap else -1.0
    hits = total = 0
    for b, s, lab in zip(*ref):
        if s < floor:
            continue
        total += 1
        same = (out[2] == lab) & (np.abs(out[1] - s) <= score)
        hits += int(same.any() and iou_matrix(b[None], out[0][same]).max() >= iou)
    assert total > 0
    return hits / total


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
    from detkit.inference.runtimes import OpenVINORuntime
    from detkit.models.fold import unfolded

    assert sorted(os.listdir(exported)) == ["classes.json", "config.yml", "export.json", "model.bin", "model.xml"]
    manifest = json.loads(open(os.path.join(exported, "export.json")).read())
    assert manifest["format"] == "openvino" and manifest["step"] == tiny_run["step"] and manifest["min_prob"] == 0.01
    tf_detector = Detector.from_checkpoint(tiny_run["run_dir"])
    ov_detector = Detector.from_checkpoint(exported)
    assert isinstance(ov_detector.runtime, OpenVINORuntime) and ov_detector.model is None and ov_detector.class_names == ["raccoon"]
    post = tf_detector.config.model.postprocess
    cap = min(post.max_total, post.max_per_class)
    # The export holds the graph as the checkpoint has it (OpenVINO folds BatchNorm itself), so TensorFlow runs that
    # graph here too: the tiny model's near-tied scores flip with the rounding of TensorFlow's own folding, which
    # tests/models/test_fold.py holds to its original.
    with unfolded():
        for image in photos(raccoon_dir):
            ref, out = tf_detector.raw_detections(image), ov_detector.raw_detections(image)
            assert matched(ref, out, cap) >= 0.98 and matched(out, ref, cap) >= 0.98
    # predict's filters come from the exported config (min_prob 0.01 as exported).
    assert all(d.prob >= 0.01 for d in ov_detector.predict(photos(raccoon_dir, 1)[0]))


def _random_model_in_openvino(overrides, raccoon_dir, tmp_path):
    """A model of random weights built with `overrides`, its detections of a photo in TensorFlow and in its
    OpenVINO conversion, the traced graph, and the detection cap."""
    import keras
    import tensorflow as tf

    from detkit.config import load_config
    from detkit.inference.openvino import convert, traced_detector
    from detkit.inference.runtimes import OpenVINORuntime
    from detkit.models.build import build_detector
    from detkit.models.faster_rcnn import detections_in_order

    cfg = load_config([], overrides + ["model.postprocess.score_threshold=0.0"])
    keras.utils.set_random_seed(0)
    model = build_detector(cfg, 3)
    image = photos(raccoon_dir, 1)[0]
    out = model({"image": tf.constant(image[None]), "image_hw": tf.constant([image.shape[:2]])}, training=False)
    ref = tuple(t.numpy() for t in detections_in_order(out, 0))
    traced = traced_detector(model)
    got = OpenVINORuntime.compile(convert(traced, str(tmp_path))).one(image)
    cap = min(cfg.model.postprocess.max_total, cfg.model.postprocess.max_per_class)
    return model, ref, got, traced, cap


def test_the_fpn_model_converts_and_gives_its_detections(tmp_path, raccoon_dir):
    """The pyramid's parts (pooled level, multi-level RoIAlign, per-level proposals) in OpenVINO, random weights."""
    import tensorflow as tf

    from detkit.config.tiny import tiny_model_overrides

    overrides = [o for o in tiny_model_overrides() if not o.startswith("model.anchors.sizes")]
    model, ref, got, traced, cap = _random_model_in_openvino(
        overrides + ["model.architecture=fpn", "model.fpn.channels=16", "model.fpn.body_strides=[8,16]",
                     "model.fpn.anchor_sizes=[[16],[32],[64]]"], raccoon_dir, tmp_path)
    assert len(ref[1]) > 10
    assert matched(ref, got, cap) >= 0.98 and matched(got, ref, cap) >= 0.98
    # OpenVINO folds BatchNorm itself: the traced graph is the model's own, each kernel a constant, where
    # TensorFlow's inference multiplies kernels by the norms' scales (detkit/models/fold.py).
    assert _convs_with_computed_kernels(traced.graph.as_graph_def()) == 0
    folded = tf.function(lambda x: model.features(x, tf.shape(x)[1:3][None])[0])
    folded_graph = folded.get_concrete_function(tf.TensorSpec([1, 64, 64, 3], tf.float32)).graph.as_graph_def()
    assert _convs_with_computed_kernels(folded_graph) > 0


def test_a_tiled_model_converts_and_gives_its_detections(tmp_path, raccoon_dir):
    """Tiles (cut, detected one by one, merged with the whole photo's detections) in OpenVINO, random weights:
    a 400 x 257 photo in tiles of 160 pixels is six tiles and the whole photo."""
    from detkit.config.tiny import tiny_model_overrides

    _, ref, got, _, cap = _random_model_in_openvino(tiny_model_overrides() + ["dataset.image.tiles.size=160"],
                                                    raccoon_dir, tmp_path)
    assert len(ref[1]) > 10
    assert matched(ref, got, cap) >= 0.98 and matched(got, ref, cap) >= 0.98


def _convs_with_computed_kernels(graph_def) -> int:
    """How many convolutions of a graph take their kernel from a product (a folded BatchNorm) rather than a
    constant or variable."""
    nodes = {n.name: n for n in graph_def.node}
    for function in graph_def.library.function:
        nodes.update({n.name: n for n in function.node_def})

    def source(name: str):
        node = nodes.get(name.lstrip("^").split(":")[0])
        while node is not None and node.op in ("Identity", "Cast"):
            node = nodes.get(node.input[0].split(":")[0])
        return node

    convs = [n for n in nodes.values() if n.op in ("Conv2D", "DepthwiseConv2dNative")]
    return sum(1 for n in convs if source(n.input[1]) is not None and source(n.input[1]).op == "Mul")


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
    # The evaluator's detections themselves: as many from the export as from TensorFlow, image by image.
    from detkit import Detector
    from detkit.eval.runner import collect

    counts = {}
    for name, path in (("tf", tiny_run["run_dir"]), ("ov", exported)):
        detector = Detector.from_checkpoint(path)
        _, dets = collect(detector, detector.config, tiny_run["dataset_dir"], "test", show_progress=False, limit=5)
        counts[name] = [len(d.scores) for d in dets]
    # (A detection scored at the threshold may fall either side of it.)
    assert sum(counts["tf"]) > 0 and np.abs(np.subtract(counts["ov"], counts["tf"])).max() <= 1


def test_an_export_refuses_what_it_did_not_write_watching_reexport_and_graph_overrides(exported, tiny_run,
                                                                                         tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("checkpoint", "export", tiny_run["run_dir"], "--format", "openvino", "--output", mine,
                    "--overwrite")
    assert "not an earlier `detkit checkpoint export`" in refused(result)
    assert (mine / "notes.txt").read_text() == "keep me"
    result = invoke("eval", "--checkpoint", exported, "--dataset-dir", tiny_run["dataset_dir"], "--split", "test",
                    "--no-progress", "--watch")
    assert "exported model, which gets no new checkpoints" in refused(result)
    result = invoke("checkpoint", "export", exported, "--format", "openvino", "--output", tmp_path / "again")
    assert "already an exported model; export the run it came from" in refused(result)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "black.jpg")
    result = invoke("predict", tmp_path / "black.jpg", "--checkpoint", exported, "-o", "dataset.image.max_size=320")
    assert "an exported model's graph is fixed" in refused(result)


def test_the_exported_input_transform_is_tensorflows_for_both_roundings(tmp_path, raccoon_dir):
    """The resize of one image outside a loop, its sizes inside one: torchvision's float64 "floor" sizes came out
    wrong in OpenVINO outside a loop (423x660 for 320x498), and by a pixel inside one for sizes whose float64
    product falls just under a whole number (161x253 to 800x1257 where torchvision has 799x1257)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from detkit.inference.openvino import convert
    from detkit.inference.runtimes import OpenVINORuntime
    from detkit.models.transform import InputTransform

    images = photos(raccoon_dir, 1) + [np.zeros((h, w, 3), np.uint8) for h, w in ((161, 253), (141, 233), (101, 193))]
    for transform in (InputTransform(320, 640, "floor", "imagenet", 32), InputTransform(800, 1333, "floor", "imagenet"),
                      InputTransform(300, 320, "round", "tf")):
        def network_input(pixels):
            resized, sizes = transform.resize_batch(pixels[None], tf.shape(pixels)[None, :2])
            boxes = tf.cast(tf.concat([sizes, sizes], axis=1), tf.float32)  # named like a detector's outputs
            return boxes, tf.reduce_sum(transform.batch(resized, sizes), axis=[1, 2, 3]), sizes[:, 0]

        frozen = convert_variables_to_constants_v2(tf.function(network_input).get_concrete_function(
            tf.TensorSpec([None, None, 3], tf.uint8, name="image")))
        runtime = OpenVINORuntime.compile(convert(frozen, str(tmp_path)))
        for image in images:
            ref = [t.numpy() for t in frozen(tf.constant(image))]
            got = runtime.one(image)
            h, w = image.shape[:2]
            scale = min(transform.min_size / min(h, w), transform.max_size / max(h, w))
            by_hand = (np.floor if transform.rounding == "floor" else np.round)(np.array([h, w]) * scale)
            assert ref[0][0, :2].tolist() == by_hand.tolist()
            assert np.array_equal(got[0], ref[0]) and np.allclose(got[1], ref[1], rtol=1e-4)
