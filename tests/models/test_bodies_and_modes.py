import numpy as np
import pytest
import tensorflow as tf

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.models import bodies
from detkit.models.build import build_detector
from detkit.models.roi_pooling import RoIPool


@pytest.mark.parametrize("name, channels, tail", [
    ("small_resnet", 256, False), ("mobilenet_v2", 576, False), ("resnet50", 1024, True),
])
def test_single_level_bodies_have_stride_16(name, channels, tail):
    body, _ = bodies.single_level_body(name, [32, 64, 128, 256], [1, 2, 2, 2], True, 5, with_tail=True)
    out = body.model(tf.zeros([1, 96, 128, 3]))
    assert out.shape == (1, 6, 8, channels) and body.strides == (16,)
    assert (body.tail is not None) == tail
    if tail:
        assert body.tail(tf.zeros([2, 14, 14, channels])).shape == (2, 7, 7, 2048)


def _small(**freezing):
    body, whole = bodies.single_level_body("small_resnet", [32, 64, 128, 256], [1, 2, 2, 2], True, 5, False)
    bodies.freeze(whole, **{"trainable": True, "fine_tune_from": "", "freeze_batchnorm": False, **freezing})
    return body.model


def test_freezing_options():
    assert _small(trainable=False).trainable_variables == []
    names = [v.path for v in _small(fine_tune_from="stage3_block1_a_conv", freeze_batchnorm=True).trainable_variables]
    assert not any(n.startswith("stem") or n.startswith("stage2") for n in names)
    assert any(n.startswith("stage3_block1_a_conv") for n in names)
    assert not any("_bn/" in n for n in names)  # BatchNorm frozen
    with pytest.raises(ConfigError, match="fine_tune_from: no layer 'nope'"):
        _small(fine_tune_from="nope")


def test_building_a_model_reads_no_weights_file(tmp_path):
    """A run's config may name a weights file of another machine: only a new training run reads it."""
    cfg = load_config(overrides=["model.base_network.name=small_resnet",
                                 f"model.base_network.weights={tmp_path / 'elsewhere.h5'}"])
    assert build_detector(cfg, 1).backbone is not None


def test_rpn_only_mode():
    cfg = load_config(overrides=[
        "model.base_network.name=small_resnet", "model.base_network.weights=none",
        "model.base_network.small_widths=[8,8,16,16]", "model.rpn.channels=16", "model.rcnn.enabled=false",
    ])
    model = build_detector(cfg, num_classes=1)
    assert model.rcnn_head is None
    images = tf.random.uniform([1, 128, 128, 3], 0, 255)
    hw = tf.constant([[128, 128]])
    losses = model.compute_losses(images, hw, tf.constant([[[10.0, 10.0, 90.0, 90.0]]]), tf.constant([[1]]),
                                  tf.constant([[True]]))
    assert set(losses) == {"rpn_class", "rpn_box", "l2", "total"}
    out = model({"image": images, "image_hw": hw})
    n = int(out["num_detections"][0])
    assert n > 0 and set(out["labels"].numpy()[0][:n].tolist()) == {1}
    assert np.all(np.diff(out["scores"].numpy()[0][:n]) <= 1e-6)  # best first


@pytest.mark.parametrize("head, pooled_side, has_reduce", [("fc", 7, True), ("conv5", 14, False)])
def test_rcnn_head_types_on_resnet50(head, pooled_side, has_reduce):
    cfg = load_config(overrides=[
        "model.base_network.name=resnet50", "model.base_network.weights=none", f"model.rcnn.head={head}",
        "model.rcnn.fc_sizes=[32]", "model.rcnn.reduce_channels=16", "model.rpn.channels=16",
    ])
    model = build_detector(cfg, num_classes=2)
    assert (model.rcnn_head.tail is not None) == (head == "conv5")
    assert (model.rcnn_head.reduce is not None) == has_reduce
    features = tf.zeros([1, 6, 8, 1024])
    rois = tf.constant([[[0.0, 0.0, 64.0, 64.0]]])
    pooled_from = model.rcnn_head.reduce_features(features)
    assert pooled_from.shape[-1] == (16 if has_reduce else 1024)
    logits, deltas = model.box_head([features], rois, training=False)
    assert logits.shape == (1, 1, 3) and deltas.shape == (1, 1, 2, 4)
    pooler = model.roi_settings.pooler
    assert isinstance(pooler, RoIPool) and pooler.pool_stride == (2 if head == "fc" else 1)
    assert pooled_side == 14 // pooler.pool_stride


def test_reduce_channels_defaults_to_the_architectures_own():
    tiny = ["model.base_network.name=small_resnet", "model.base_network.weights=none",
            "model.base_network.small_widths=[8,8,16,16]", "model.rpn.channels=16", "model.rcnn.fc_sizes=[16]"]
    assert build_detector(load_config(overrides=tiny), 1).rcnn_head.reduce.filters == 256
    fpn = tiny + ["model.architecture=fpn", "model.fpn.channels=8", "model.fpn.anchor_sizes=[[32],[64],[128],[256]]"]
    assert build_detector(load_config(overrides=fpn), 1).rcnn_head.reduce is None


def test_conv5_head_needs_a_resnet():
    with pytest.raises(ConfigError, match="model.rcnn.head: conv5 needs a ResNet"):
        load_config(overrides=["model.base_network.name=vgg16", "model.rcnn.head=conv5"])


@pytest.mark.parametrize("overrides, message", [
    (["model.anchors.sizes=[16, 32]"], "config key model.anchors.sizes: the fpn architecture takes one list"),
    (["model.roi_pooling.crop_size=8"], "config key model.roi_pooling: the fpn architecture pools with"),
    (["model.rcnn.reduce_channels=64"], "config key model.rcnn.reduce_channels: the fpn architecture pools"),
    (["model.rcnn.head=conv5", "model.base_network.name=resnet50_tv"], "config key model.rcnn.head: the fpn"),
    (["model.base_network.name=vgg16"], "config key model.base_network.name: vgg16 has no fpn body"),
])
def test_keys_the_fpn_architecture_has_not_are_errors(overrides, message):
    base = ["model.architecture=fpn", "model.base_network.name=small_resnet", "model.base_network.weights=none",
            "model.fpn.anchor_sizes=[[32],[64],[128],[256]]"]
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=base + overrides)


def test_keys_the_single_level_architecture_has_not_are_errors():
    with pytest.raises(ConfigError, match="config key model.fpn: only the fpn architecture has a pyramid"):
        load_config(overrides=["model.fpn.channels=64"])
    with pytest.raises(ConfigError, match="mobilenet_v3_large_tv has no stride-16 output"):
        load_config(overrides=["model.base_network.name=mobilenet_v3_large_tv", "model.base_network.weights=none"])
