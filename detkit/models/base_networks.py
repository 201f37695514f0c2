"""Backbone CNNs cut at stride 16, with weight loading ("imagenet", a file, or none)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import tensorflow as tf

from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError

STRIDE = 16

# keras.applications constructor, stride-16 output layer, preprocessing mode, has a conv5 tail.
_APPLICATIONS = {
    "vgg16": ("VGG16", "block5_conv3", "caffe", False),
    "resnet50": ("ResNet50", "conv4_block6_out", "caffe", True),
    "resnet101": ("ResNet101", "conv4_block23_out", "caffe", True),
    "mobilenet_v2": ("MobileNetV2", "block_13_expand_relu", "tf", False),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class BaseNetwork:
    """A stride-16 feature extractor and, for ResNets, the conv5 stage reused as the R-CNN tail."""

    features: keras.Model
    tail: Optional[keras.Model]
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    stride: int = STRIDE


def _preprocess_fn(mode: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Pixel normalisation matching how the backbone's weights were trained."""
    if mode == "caffe":
        mean = tf.constant(_CAFFE_MEAN_BGR, tf.float32)
        return lambda images: images[..., ::-1] - mean
    return lambda images: images / 127.5 - 1.0


def _conv_bn_relu(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str,
                  relu: bool = True) -> keras.KerasTensor:
    """Conv (no bias) + BatchNorm (+ ReLU)."""
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    """A ResNet basic block: two 3x3 convs with an identity or projection shortcut."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn_relu(x, filters, 1, stride, f"{name}_proj", relu=False)
    y = _conv_bn_relu(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn_relu(y, filters, 3, 1, f"{name}_b", relu=False)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def small_resnet(widths: list[int], blocks: list[int]) -> keras.Model:
    """A light residual CNN (stride 16) that trains from scratch on a CPU in minutes."""
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_bn_relu(inputs, widths[0], 3, 2, "stem")
    for b in range(blocks[0]):
        x = _basic_block(x, widths[0], 1, f"stage1_block{b + 1}")
    for stage in range(1, 4):
        for b in range(blocks[stage]):
            x = _basic_block(x, widths[stage], 2 if b == 0 else 1, f"stage{stage + 1}_block{b + 1}")
        if blocks[stage] == 0:
            x = _conv_bn_relu(x, widths[stage], 3, 2, f"stage{stage + 1}_down")
    return keras.Model(inputs, x, name="small_resnet")


def _application(cfg: BaseNetworkConfig) -> keras.Model:
    """A keras.applications model without its classifier, weights loaded as configured."""
    ctor_name = _APPLICATIONS[cfg.name][0]
    ctor = getattr(keras.applications, ctor_name)
    weights = cfg.weights
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise ConfigError(f"config key model.base_network.weights: file {weights} not found "
                          "(use imagenet, none, or a path to a weights file)")
    try:
        return ctor(include_top=False, weights=None if weights == "none" else weights, input_shape=(None, None, 3))
    except Exception as exc:  # download failures surface as several exception types
        if weights == "imagenet":
            raise ConfigError(
                f"config key model.base_network.weights: could not get ImageNet weights for {cfg.name} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); on a machine without internet "
                "set it to none or to a downloaded weights file"
            ) from None
        raise ConfigError(f"config key model.base_network.weights: cannot load {weights}: {exc}") from None


def _freeze(model: keras.Model, cfg: BaseNetworkConfig) -> None:
    """Apply trainable / fine_tune_from / freeze_batchnorm."""
    if not cfg.trainable:
        model.trainable = False
        return
    if cfg.fine_tune_from:
        names = [layer.name for layer in model.layers]
        if cfg.fine_tune_from not in names:
            raise ConfigError(
                f"config key model.base_network.fine_tune_from: no layer {cfg.fine_tune_from!r} in {cfg.name}"
            )
        for layer in model.layers[: names.index(cfg.fine_tune_from)]:
            layer.trainable = False
    if cfg.freeze_batchnorm:
        # In Keras 3 a non-trainable BatchNormalization also runs in inference mode.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def build_base_network(cfg: BaseNetworkConfig) -> BaseNetwork:
    """The configured backbone as a stride-16 feature model (+ conv5 tail for ResNets)."""
    if cfg.name == "small_resnet":
        model = small_resnet(cfg.small_widths, cfg.small_blocks)
        if cfg.weights not in ("none", "imagenet"):
            if not os.path.isfile(cfg.weights):
                raise ConfigError(f"config key model.base_network.weights: file {cfg.weights} not found")
            model.load_weights(cfg.weights)
        elif cfg.weights == "imagenet":
            raise ConfigError("config key model.base_network.weights: small_resnet has no ImageNet weights; use none")
        _freeze(model, cfg)
        return BaseNetwork(features=model, tail=None, preprocess=_preprocess_fn("tf"))
    _, cut, mode, has_tail = _APPLICATIONS[cfg.name]
    full = _application(cfg)
    _freeze(full, cfg)
    cut_output = full.get_layer(cut).output
    features = keras.Model(full.input, cut_output, name=f"{cfg.name}_c4")
    tail = keras.Model(cut_output, full.output, name=f"{cfg.name}_c5") if has_tail else None
    return BaseNetwork(features=features, tail=tail, preprocess=_preprocess_fn(mode))
