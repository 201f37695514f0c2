import keras
import numpy as np
import pytest
import tensorflow as tf

from detkit.config import load_config
from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError
from detkit.models.base_networks import build_base_network
from detkit.models.faster_rcnn import FasterRCNN


@pytest.mark.parametrize("name, channels, tail", [
    ("small_resnet", 256, False), ("mobilenet_v2", 576, False), ("resnet50", 1024, True),
])
def test_backbones_have_stride_16(name, channels, tail):
    base = build_base_network(BaseNetworkConfig(name=name, weights="none"))
    out = base.features(tf.zeros([1, 96, 128, 3]))
    assert out.shape == (1, 6, 8, channels)
    assert (base.tail is not None) == tail
    if tail:
        assert base.tail(tf.zeros([2, 14, 14, channels])).shape == (2, 7, 7, 2048)


def test_freezing_options():
    frozen = build_base_network(BaseNetworkConfig(name="small_resnet", weights="none", trainable=False))
    assert frozen.features.trainable_variables == []
    partial = build_base_network(BaseNetworkConfig(name="small_resnet", weights="none",
                                                   fine_tune_from="stage3_block1_a_conv", freeze_batchnorm=True))
    names = [v.path for v in partial.features.trainable_variables]
    assert not any(n.startswith("stem") or n.startswith("stage2") for n in names)
    assert any(n.startswith("stage3_block1_a_conv") for n in names)
    assert not any("_bn/" in n for n in names)  # BatchNorm frozen


def test_weights_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="model.base_network.weights: file .*missing.h5 not found"):
        build_base_network(BaseNetworkConfig(name="resnet50", weights=str(tmp_path / "missing.h5")))
    with pytest.raises(ConfigError, match="fine_tune_from: no layer 'nope'"):
        build_base_network(BaseNetworkConfig(name="small_resnet", weights="none", fine_tune_from="nope"))


def test_small_resnet_weights_file_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    a = build_base_network(BaseNetworkConfig(name="small_resnet", weights="none", small_widths=[8, 8, 8, 8]))
    path = str(tmp_path / "backbone.weights.h5")
    a.features.save_weights(path)
    b = build_base_network(BaseNetworkConfig(name="small_resnet", weights=path, small_widths=[8, 8, 8, 8]))
    for va, vb in zip(a.features.variables, b.features.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_rpn_only_mode():
    cfg = load_config(overrides=[
        "model.base_network.name=small_resnet", "model.base_network.weights=none",
        "model.base_network.small_widths=[8,8,16,16]", "model.rpn.channels=16", "model.rcnn.enabled=false",
    ])
    model = FasterRCNN(cfg.model, num_classes=1)
    model.build_for_inference()
    assert model.rcnn_head is None
    images = tf.random.uniform([1, 128, 128, 3], 0, 255)
    hw = tf.constant([[128, 128]])
    losses = model.compute_losses(images, hw, tf.constant([[[10.0, 10.0, 90.0, 90.0]]]), tf.constant([[1]]),
                                  tf.constant([[True]]))
    assert set(losses) == {"rpn_class", "rpn_box", "l2", "total"}
    out = model((images, hw))
    n = int(out["num_detections"][0])
    assert n > 0 and set(out["labels"].numpy()[0][:n].tolist()) == {1}
    assert np.all(np.diff(out["scores"].numpy()[0][:n]) <= 1e-6)  # best first


@pytest.mark.parametrize("head, pooled_side, has_reduce", [("fc", 7, True), ("conv5", 14, False)])
def test_rcnn_head_types_on_resnet50(head, pooled_side, has_reduce):
    cfg = load_config(overrides=[
        "model.base_network.name=resnet50", "model.base_network.weights=none", f"model.rcnn.head={head}",
        "model.rcnn.fc_sizes=[32]", "model.rcnn.reduce_channels=16", "model.rpn.channels=16",
    ])
    model = FasterRCNN(cfg.model, num_classes=2)
    assert (model.rcnn_head.tail is not None) == (head == "conv5")
    assert (model.rcnn_head.reduce is not None) == has_reduce
    features = tf.zeros([1, 6, 8, 1024])
    rois = tf.constant([[[0.0, 0.0, 64.0, 64.0]]])
    pooled_from = model.rcnn_head.reduce_features(features)
    assert pooled_from.shape[-1] == (16 if has_reduce else 1024)
    logits, deltas = model._rcnn(features, rois, training=False)
    assert logits.shape == (1, 1, 3) and deltas.shape == (1, 1, 2, 4)
    assert model.pool_stride == (2 if head == "fc" else 1) and pooled_side == 14 // model.pool_stride


def test_conv5_head_needs_a_resnet():
    with pytest.raises(ConfigError, match="model.rcnn.head: conv5 needs a ResNet"):
        load_config(overrides=["model.base_network.name=vgg16", "model.rcnn.head=conv5"])
