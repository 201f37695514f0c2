"""torchvision-layout bodies: shapes, padding, FrozenBatchNorm, freezing, config wiring (their torchvision
names: tests/pretrained/test_tv_body_names.py)."""
import keras
import numpy as np
import pytest

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.models import bodies
from detkit.models.transform import normalize
from detkit.models.tv_layers import FrozenBatchNorm, conv
from detkit.models.tv_mobilenet_v3 import make_divisible, tv_mobilenet_v3_large
from detkit.models.tv_resnet import tv_resnet


@pytest.fixture(scope="module")
def resnet50():
    return tv_resnet(50, trainable_layers=3)


@pytest.fixture(scope="module")
def mobilenet():
    return tv_mobilenet_v3_large(trainable_layers=3)


def test_resnet50_returns_c2_to_c5_at_torch_sizes(resnet50):
    # torch: 203 -> conv1 102 -> maxpool 51 -> 26 -> 13 -> 7; 317 -> 159 -> 80 -> 40 -> 20 -> 10.
    outs = resnet50(np.zeros((1, 203, 317, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [(1, 51, 80, 256), (1, 26, 40, 512), (1, 13, 20, 1024),
                                              (1, 7, 10, 2048)]


def _trained_modules(model):
    """The first part of the module path of every layer with trainable weights."""
    return {layer.name.split("_")[0] for layer in model.layers if layer.trainable_weights}


def test_resnet_trainable_layers_freeze_from_the_bottom(resnet50):
    assert _trained_modules(resnet50) == {"layer2", "layer3", "layer4"}
    everything = tv_resnet(50, frozen_bn=False, trainable_layers=5)
    assert _trained_modules(everything) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}


def test_mobilenet_returns_features_13_and_16(mobilenet):
    outs = mobilenet(np.zeros((1, 64, 96, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [(1, 2, 3, 160), (1, 2, 3, 960)]


def test_mobilenet_trainable_layers_follow_torchvision_stages(mobilenet):
    # Stages start at features 0, 2, 4, 7, 13, 16; three trainable stages = features 7 onwards.
    trainable = {int(layer.name.split("_")[1]) for layer in mobilenet.layers if layer.trainable_weights}
    assert min(trainable) == 7 and max(trainable) == 16


def test_make_divisible_matches_torchvision():
    assert [make_divisible(v) for v in (18, 30, 60, 120, 168, 240)] == [24, 32, 64, 120, 168, 240]
    assert make_divisible(10) == 16  # 8 would be more than 10% down


def test_hard_activations_are_torchs():
    x = np.array([-4.0, -1.0, 0.0, 1.0, 4.0], np.float32)
    np.testing.assert_allclose(keras.activations.get("hard_silu")(x), [0, -1 / 3, 0, 2 / 3, 4], atol=1e-6)
    np.testing.assert_allclose(keras.activations.get("hard_sigmoid")(x), [0, 1 / 3, 0.5, 2 / 3, 1], atol=1e-6)


def test_frozen_batchnorm_is_the_fixed_affine_map():
    layer = FrozenBatchNorm()
    layer.build((None, 2))
    layer.weight.assign([3.0, 1.0])
    layer.bias.assign([0.5, -1.0])
    layer.running_mean.assign([1.0, 2.0])
    layer.running_var.assign([4.0 - 1e-5, 0.25 - 1e-5])  # sqrt(var + eps) = 2 and 0.5
    # (3 - 1) / 2 * 3 + 0.5 = 3.5; (3 - 2) / 0.5 * 1 - 1 = 1.
    np.testing.assert_allclose(layer(np.array([[3.0, 3.0]], np.float32)), [[3.5, 1.0]], rtol=1e-6)
    assert layer.trainable_weights == []


def _ones_conv(size: int):
    """A 3x3 stride-2 conv of all-ones weights with torch's padding 1, on a size x size input."""
    inputs = keras.Input((size, size, 1))
    model = keras.Model(inputs, conv(inputs, 1, 3, 2, "c"))
    model.layers[-1].kernel.assign(np.ones((3, 3, 1, 1), np.float32))
    return model


def test_padding_equals_torch_on_a_5x5_input():
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    out = _ones_conv(5)(x).numpy()[0, :, :, 0]
    # Windows centred on rows/cols 0, 2, 4: corner 0+1+5+6, centre 6+7+8+11+12+13+16+17+18.
    assert out.shape == (3, 3)
    assert out[0, 0] == 12 and out[1, 1] == 108 and out[2, 2] == 18 + 19 + 23 + 24
    assert out[0, 2] == 3 + 4 + 8 + 9


def test_padding_is_symmetric_on_even_sizes_unlike_tf_same():
    out = _ones_conv(6)(np.ones((1, 6, 6, 1), np.float32)).numpy()[0, :, :, 0]
    # torch windows start at -1, 1, 3: 2, 3, 3 real rows (TF "same" would start at 0, 2, 4: 3, 3, 2).
    np.testing.assert_array_equal(out, np.outer([2, 3, 3], [2, 3, 3]))


def test_imagenet_normalization_is_torchvisions():
    out = normalize(np.full((1, 1, 1, 3), 255.0, np.float32), "imagenet").numpy().ravel()
    np.testing.assert_allclose(out, [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-6)


def test_config_refuses_what_tv_bodies_cannot_do():
    with pytest.raises(ConfigError, match="has no downloadable Keras ImageNet weights"):
        load_config(overrides=["model.base_network.name=resnet50_tv", "model.base_network.weights=imagenet"])
    with pytest.raises(ConfigError, match=r"trainable_layers: must be within \[0, 5\] for resnet50_tv, got 6"):
        load_config(overrides=["model.base_network.name=resnet50_tv", "model.base_network.trainable_layers=6"])
    with pytest.raises(ConfigError, match="trainable_layers: only for the torchvision-layout bodies"):
        load_config(overrides=["model.base_network.trainable_layers=2"])
    with pytest.raises(ConfigError, match="mobilenet_v3_large_tv has no stride-16 output"):
        load_config(overrides=["model.base_network.name=mobilenet_v3_large_tv", "model.base_network.weights=none"])


def test_resnet_tv_also_serves_the_stride_16_detector():
    base, _ = bodies.single_level_body("resnet50_tv", [], [], frozen_bn=False, trainable_layers=5, with_tail=True)
    assert base.model(np.zeros((1, 96, 128, 3), np.float32)).shape == (1, 6, 8, 1024)
    assert base.tail(np.zeros((2, 14, 14, 1024), np.float32)).shape == (2, 7, 7, 2048)
    # From scratch: torchvision trains every layer, with ordinary BatchNorm.
    assert len(base.model.trainable_weights) > 0
    assert any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
               for layer in base.model.layers)
