"""Bodies of the fpn architecture: image -> feature maps of increasing stride, finest first."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf

from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError
from detkit.models.base_networks import small_resnet

# torchvision's GeneralizedRCNNTransform normalisation, on 0-1 pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PyramidBody:
    """The body model, the stride of each of its outputs and the pixel normalisation its weights expect."""

    model: keras.Model
    strides: list[int]
    preprocess: Callable[[tf.Tensor], tf.Tensor]


def imagenet_normalize(images: tf.Tensor) -> tf.Tensor:
    """0-255 RGB -> (x / 255 - mean) / std, as torchvision's detection transform."""
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (images / 255.0 - mean) / std


def _small_resnet_body(cfg: BaseNetworkConfig) -> PyramidBody:
    """small_resnet's last three stages (strides 4, 8, 16)."""
    if cfg.weights not in ("none",):
        raise ConfigError("config key model.base_network.weights: small_resnet as an fpn body trains from scratch; "
                          "use none")
    full = small_resnet(cfg.small_widths, cfg.small_blocks)
    outputs = []
    for stage in (2, 3, 4):
        blocks = cfg.small_blocks[stage - 1]
        name = f"stage{stage}_block{blocks}_out" if blocks > 0 else f"stage{stage}_down_relu"
        outputs.append(full.get_layer(name).output)
    model = keras.Model(full.input, outputs, name="small_resnet_pyramid")
    return PyramidBody(model, [4, 8, 16], lambda images: images / 127.5 - 1.0)


def build_pyramid_body(cfg: BaseNetworkConfig) -> PyramidBody:
    """The configured body of the fpn architecture, with torchvision's module names on tv_* bodies."""
    if cfg.name == "small_resnet":
        return _small_resnet_body(cfg)
    if cfg.name in ("tv_resnet50", "tv_mobilenet_v3_large"):
        if cfg.weights != "none":
            raise ConfigError(f"config key model.base_network.weights: {cfg.name} takes its weights from "
                              "`detkit checkpoint import` or train.init_from; use none")
        if cfg.name == "tv_resnet50":
            from detkit.models.tv_resnet import tv_resnet

            model = tv_resnet(50, frozen_bn=cfg.freeze_batchnorm, trainable_layers=cfg.tv_trainable_layers)
            strides = [4, 8, 16, 32]
        else:
            from detkit.models.tv_mobilenet_v3 import tv_mobilenet_v3_large

            model = tv_mobilenet_v3_large(frozen_bn=cfg.freeze_batchnorm, trainable_layers=cfg.tv_trainable_layers)
            strides = [32, 32]
        if not cfg.trainable:
            model.trainable = False
        model.torch_prefix = "backbone.body."
        return PyramidBody(model, strides, imagenet_normalize)
    raise ConfigError(f"config key model.base_network.name: {cfg.name} has no fpn body; use tv_resnet50, "
                      "tv_mobilenet_v3_large or small_resnet (or model.architecture: single_level)")
