"""Backbone CNNs, cut at stride 16 or multi-level in torchvision's layout, with weight loading."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError, StateDictError
from detkit.models import tv_mobilenet_v3, tv_resnet
from detkit.models.tv_layers import imagenet_preprocess

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


def freeze_layers(model: keras.Model, cfg: BaseNetworkConfig) -> None:
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


# torchvision detectors keep the body's weights under this key prefix.
TORCH_BODY_PREFIX = "backbone.body."


@dataclass
class TvBody:
    """A torchvision-layout body: image -> feature maps (strides ascending) and the pixel normalisation it needs."""

    model: keras.Model
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    preprocess: Callable[[tf.Tensor], tf.Tensor]


def _tv_model(cfg: BaseNetworkConfig) -> tuple[keras.Model, tuple[int, ...], tuple[int, ...]]:
    """The body's Keras model, strides and channels, before weights and freezing."""
    pretrained = cfg.weights != "none"
    if cfg.name == "mobilenet_v3_large_tv":
        layers = cfg.trainable_layers if cfg.trainable_layers is not None else (3 if pretrained else 6)
        model = tv_mobilenet_v3.tv_mobilenet_v3_large(frozen_bn=cfg.freeze_batchnorm, trainable_layers=layers)
        return model, tv_mobilenet_v3.STRIDES, tv_mobilenet_v3.CHANNELS
    layers = cfg.trainable_layers if cfg.trainable_layers is not None else (3 if pretrained else 5)
    depth = int(cfg.name[len("resnet"):-len("_tv")])
    model = tv_resnet.tv_resnet(depth, frozen_bn=cfg.freeze_batchnorm, trainable_layers=layers)
    return model, tv_resnet.STRIDES, tv_resnet.CHANNELS


def _load_torch_npz(model: keras.Model, path: str, name: str) -> None:
    """Weights from a torch state dict saved as .npz: a detector's (backbone.body.*) or the ImageNet classifier's."""
    from detkit.pretrained.torch_layers import load_torch_state

    with np.load(path) as data:
        state = {key: data[key] for key in data.files}
    if any(key.startswith(TORCH_BODY_PREFIX) for key in state):
        prefix, allowed_unused = TORCH_BODY_PREFIX, ()
    elif name == "mobilenet_v3_large_tv":
        prefix, allowed_unused = "features.", ()
    else:
        prefix, allowed_unused = "", ("fc.",)
    try:
        unused = load_torch_state(model, state, prefix, allow_unused=True)
    except StateDictError as exc:
        raise StateDictError(f"{path}: {exc}") from None
    unexpected = [key for key in unused if not key.startswith(allowed_unused)]
    if unexpected:
        raise StateDictError(f"{path}: state dict key {unexpected[0]} is not part of {name}")


def build_tv_body(cfg: BaseNetworkConfig) -> TvBody:
    """A *_tv base network as torchvision builds it, weights loaded and layers frozen as configured."""
    if cfg.name not in ("resnet50_tv", "resnet101_tv", "mobilenet_v3_large_tv"):
        raise ConfigError(f"config key model.base_network.name: {cfg.name} is not a torchvision-layout body "
                          "(resnet50_tv, resnet101_tv, mobilenet_v3_large_tv)")
    model, strides, channels = _tv_model(cfg)
    weights = cfg.weights
    if weights == "imagenet":
        raise ConfigError(f"config key model.base_network.weights: {cfg.name} has no downloadable Keras ImageNet "
                          "weights; use none, a .weights.h5 file, or torchvision's state dict saved as .npz")
    if weights != "none":
        if not os.path.isfile(weights):
            raise ConfigError(f"config key model.base_network.weights: file {weights} not found")
        if weights.endswith(".npz"):
            _load_torch_npz(model, weights, cfg.name)
        else:
            model.load_weights(weights)
    freeze_layers(model, cfg)
    return TvBody(model=model, strides=strides, channels=channels, preprocess=imagenet_preprocess)


def build_base_network(cfg: BaseNetworkConfig) -> BaseNetwork:
    """The configured backbone as a stride-16 feature model (+ conv5 tail for ResNets)."""
    if cfg.name == "mobilenet_v3_large_tv":
        raise ConfigError("config key model.base_network.name: mobilenet_v3_large_tv has no stride-16 output; "
                          "it serves the FPN detector only")
    if cfg.name in ("resnet50_tv", "resnet101_tv"):
        body = build_tv_body(cfg).model
        c4, c5 = body.outputs[2], body.outputs[3]
        return BaseNetwork(features=keras.Model(body.input, c4, name=f"{cfg.name}_c4"),
                           tail=keras.Model(c4, c5, name=f"{cfg.name}_c5"), preprocess=imagenet_preprocess)
    if cfg.name == "small_resnet":
        model = small_resnet(cfg.small_widths, cfg.small_blocks)
        if cfg.weights not in ("none", "imagenet"):
            if not os.path.isfile(cfg.weights):
                raise ConfigError(f"config key model.base_network.weights: file {cfg.weights} not found")
            model.load_weights(cfg.weights)
        elif cfg.weights == "imagenet":
            raise ConfigError("config key model.base_network.weights: small_resnet has no ImageNet weights; use none")
        freeze_layers(model, cfg)
        return BaseNetwork(features=model, tail=None, preprocess=_preprocess_fn("tf"))
    _, cut, mode, has_tail = _APPLICATIONS[cfg.name]
    full = _application(cfg)
    freeze_layers(full, cfg)
    cut_output = full.get_layer(cut).output
    features = keras.Model(full.input, cut_output, name=f"{cfg.name}_c4")
    tail = keras.Model(cut_output, full.output, name=f"{cfg.name}_c5") if has_tail else None
    return BaseNetwork(features=features, tail=tail, preprocess=_preprocess_fn(mode))
