"""The fpn architecture as an ordinary detkit model: small_resnet body, trains, saves, refuses bad configs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.models.build import build_detector
from detkit.models.roi_align import MultiLevelRoIAlign
from detkit.runs.restore import restore_model
from tests.models.overfit import overfit_one_image

TINY_FPN = [
    "model.architecture=fpn", "model.base_network.name=small_resnet", "model.base_network.weights=none",
    "model.base_network.freeze_batchnorm=false", "model.base_network.small_widths=[16,32,32,64]",
    "model.base_network.small_blocks=[0,1,1,1]", "model.fpn.channels=32", "model.rpn.channels=32",
    "model.fpn.anchor_sizes=[[32],[64],[128],[256]]", "model.rcnn.reduce_channels=0", "model.rcnn.fc_sizes=[64]",
    "model.fpn.roi_align.output_size=4", "model.rcnn.target.minibatch_size=32",
    "model.rpn.train_proposals.pre_nms_top_n=300", "model.rpn.train_proposals.post_nms_top_n=100",
    "model.rpn.test_proposals.pre_nms_top_n=200", "model.rpn.test_proposals.post_nms_top_n=50",
]


def _model(seed=0, overrides=()):
    keras.utils.set_random_seed(seed)
    return build_detector(load_config(overrides=TINY_FPN + list(overrides)), num_classes=2)


def test_architecture_key_picks_the_parts():
    model = _model()
    assert model.fpn is not None and isinstance(model.roi_settings.pooler, MultiLevelRoIAlign)
    assert model.rpn_settings.anchors.placement == "torchvision" and model.transform.size_divisible == 32


def test_inference_outputs_match_the_single_level_model():
    model = _model()
    out = model({"image": tf.random.uniform([2, 70, 90, 3], 0, 255), "image_hw": tf.constant([[70, 90], [50, 60]])})
    assert set(out) == {"boxes", "scores", "labels", "num_detections"}
    out = model.stages(tf.random.uniform([2, 70, 90, 3], 0, 255), tf.constant([[70, 90], [50, 60]]))
    assert out["boxes"].shape == (2, 300, 4) and out["proposals"].shape == (2, 50, 4)
    # Proposals stay inside each image's own size, not the padded batch.
    assert float(tf.reduce_max(out["proposals"][1, :, 2])) <= 60.0
    assert float(tf.reduce_max(out["proposals"][1, :, 3])) <= 50.0


def test_an_image_alone_is_detected_as_in_a_padded_batch():
    """Alone, an image fills its tensor and is not masked; beside a larger one it is masked: same detections."""
    model = _model(overrides=["model.postprocess.score_threshold=0.0"])
    small = tf.random.uniform([1, 50, 60, 3], 0, 255, seed=1)
    padded = tf.pad(small, [[0, 0], [0, 20], [0, 30], [0, 0]], constant_values=99.0)
    batch = tf.concat([padded, tf.random.uniform([1, 70, 90, 3], 0, 255, seed=2)], axis=0)
    alone = model({"image": small, "image_hw": tf.constant([[50, 60]])})
    both = model({"image": batch, "image_hw": tf.constant([[50, 60], [70, 90]])})
    count = int(alone["num_detections"][0])
    assert count > 5 and int(both["num_detections"][0]) == count
    np.testing.assert_allclose(both["boxes"][0, :count], alone["boxes"][0, :count], atol=1e-3)
    np.testing.assert_allclose(both["scores"][0, :count], alone["scores"][0, :count], atol=1e-5)


def test_losses_are_finite_and_reach_every_trainable_variable():
    model = _model()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(tf.random.uniform([1, 64, 96, 3], 0, 255), tf.constant([[64, 96]]),
                                      tf.constant([[[10.0, 8.0, 50.0, 40.0]]]), tf.constant([[2]]),
                                      tf.constant([[True]]))
    assert set(losses) == {"rpn_class", "rpn_box", "rcnn_class", "rcnn_box", "l2", "total"}
    assert all(np.isfinite(float(v)) for v in losses.values())
    grads = tape.gradient(losses["total"], model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing


def test_box_head_runs_only_on_the_sampled_rois():
    # No proposal passes a threshold of 1.0, so each image samples only its ground-truth boxes (1 and 2).
    model = _model(overrides=["model.fpn.rpn_score_threshold=1.0"])
    seen = []
    head_call = model.rcnn_head.call

    def spy(pooled, training=False):
        seen.append(pooled.shape[0])
        return head_call(pooled, training=training)

    model.rcnn_head.call = spy
    boxes = tf.constant([[[10.0, 8.0, 50.0, 40.0], [0.0, 0.0, 0.0, 0.0]],
                         [[5.0, 5.0, 30.0, 30.0], [40.0, 20.0, 90.0, 60.0]]])
    labels = tf.constant([[1, 0], [2, 1]])
    losses = model.compute_losses(tf.random.uniform([2, 64, 96, 3], 0, 255), tf.constant([[64, 96], [64, 96]]),
                                  boxes, labels, labels > 0)
    assert seen == [2 * 2]  # the fullest image's two RoIs per image, not minibatch_size (32)
    assert np.isfinite(float(losses["rcnn_class"])) and float(losses["rcnn_class"]) > 0


def test_checkpoint_round_trip_covers_the_pyramid(tmp_path):
    a, b = _model(1), _model(2)
    prefix = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    restore_model(b, prefix)
    fpn_a = {v.path: v.numpy() for v in a.fpn.variables}
    for v in b.fpn.variables:
        np.testing.assert_array_equal(v.numpy(), fpn_a[v.path])
    assert len(a.variables) == len(b.variables)


def test_anchor_sizes_must_cover_every_level():
    with pytest.raises(ConfigError, match="model.fpn.anchor_sizes"):
        _model(overrides=["model.fpn.anchor_sizes=[[32],[64]]"])
    with pytest.raises(ConfigError, match="model.base_network.name"):
        _model(overrides=["model.base_network.name=vgg16"])


def test_small_resnet_body_honours_the_freezing_keys():
    def trainable(*overrides):
        return [v.path for v in _model(overrides=list(overrides)).backbone.trainable_variables]

    assert any("_bn/" in n for n in trainable())
    assert not any("_bn/" in n for n in trainable("model.base_network.freeze_batchnorm=true"))
    assert trainable("model.base_network.trainable=false") == []
    later = trainable("model.base_network.fine_tune_from=stage3_block1_a_conv")
    assert later and not any(n.startswith(("stem", "stage2")) for n in later)


@pytest.mark.slow
def test_fpn_overfits_one_image(raccoon_dir):
    # BatchNorm frozen: after 100 steps on one photo its moving statistics still trail the batch ones, and
    # this test looks at inference too (the single-level overfit test keeps it trainable).
    fit = overfit_one_image(_model(overrides=["model.base_network.freeze_batchnorm=true"]), raccoon_dir, steps=100)
    assert fit.final_loss() < 0.5 * fit.first_loss(), fit.losses
    assert fit.num_detections > 0
    assert fit.top_iou > 0.5, fit.top_iou


@pytest.mark.slow
def test_fpn_run_trains_predicts_and_exports(tiny_run, raccoon_dir, tmp_path):
    """`detkit train` with model.architecture fpn (batch 2), then the Detector and a SavedModel export."""
    import os

    from PIL import Image

    from detkit.inference.detector import Detector
    from detkit.inference.export import SIGNATURE, export_saved_model
    from detkit.train.trainer import train

    overrides = [o for o in TINY_FPN if not o.startswith(("model.base_network.small", "model.rpn.train",
                                                           "model.rpn.test"))]
    cfg = load_config([tiny_run["config"]], overrides=overrides + [
        f"train.job_dir={tmp_path}", "train.run_name=fpn", "train.num_steps=3", "train.checkpoint_every_steps=3"])
    trained = train(cfg)
    assert trained.step == 3
    detector = Detector.from_checkpoint(trained.run_dir)
    assert detector.model.fpn is not None
    path = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    image = np.asarray(Image.open(path).convert("RGB"))
    found = detector.predict(image, min_prob=0.0)
    assert found, "an untrained detector still returns its best guesses at min_prob 0"
    assert all(0 <= d.bbox[0] <= d.bbox[2] <= image.shape[1] and 0 <= d.bbox[1] <= d.bbox[3] <= image.shape[0]
               for d in found)
    out = tmp_path / "exported"
    export_saved_model(trained.run_dir, str(out), min_prob=0.0)
    with open(path, "rb") as fh:
        result = tf.saved_model.load(str(out)).signatures[SIGNATURE](image_bytes=tf.constant(fh.read()))
    assert int(result["num_detections"]) > 0
    np.testing.assert_array_equal(result["image_size"].numpy(), image.shape[:2])
