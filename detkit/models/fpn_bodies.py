"""Bodies of the fpn architecture: image -> feature maps of increasing stride, finest first."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf

from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError
from detkit.models import tv_mobilenet_v3, tv_resnet
from detkit.models.base_networks import TORCH_BODY_PREFIX, build_tv_body, freeze_layers, small_resnet

# small_resnet's last three stages.
SMALL_RESNET_STRIDES = [4, 8, 16]


@dataclass
class PyramidBody:
    """The body model, the stride of each of its outputs and the pixel normalisation its weights expect."""

    model: keras.Model
    strides: list[int]
    preprocess: Callable[[tf.Tensor], tf.Tensor]


def _small_resnet_body(cfg: BaseNetworkConfig) -> PyramidBody:
    """small_resnet's last three stages (strides 4, 8, 16)."""
    if cfg.weights not in ("none",):
        raise ConfigError("config key model.base_network.weights: small_resnet as an fpn body trains from scratch; "
                          "use none")
    full = small_resnet(cfg.small_widths, cfg.small_blocks)
    freeze_layers(full, cfg)
    outputs = []
    for stage in (2, 3, 4):
        blocks = cfg.small_blocks[stage - 1]
        name = f"stage{stage}_block{blocks}_out" if blocks > 0 else f"stage{stage}_down_relu"
        outputs.append(full.get_layer(name).output)
    model = keras.Model(full.input, outputs, name="small_resnet_pyramid")
    return PyramidBody(model, list(SMALL_RESNET_STRIDES), lambda images: images / 127.5 - 1.0)


def pyramid_levels(name: str) -> int:
    """The pyramid levels the fpn model builds on body `name`: one per body output, plus the max-pooled one."""
    if name == "small_resnet":
        return len(SMALL_RESNET_STRIDES) + 1
    if name == "mobilenet_v3_large_tv":
        return len(tv_mobilenet_v3.STRIDES) + 1
    if name in ("resnet50_tv", "resnet101_tv"):
        return len(tv_resnet.STRIDES) + 1
    raise _no_body(name)


def _no_body(name: str) -> ConfigError:
    """The error for a base network the fpn model cannot use."""
    return ConfigError(f"config key model.base_network.name: {name} has no fpn body; use resnet50_tv, "
                       "resnet101_tv, mobilenet_v3_large_tv or small_resnet (or model.architecture: single_level)")


def build_pyramid_body(cfg: BaseNetworkConfig) -> PyramidBody:
    """The configured body of the fpn architecture, with torchvision's module names on tv_* bodies."""
    if cfg.name == "small_resnet":
        return _small_resnet_body(cfg)
    if cfg.name.endswith("_tv"):
        body = build_tv_body(cfg)
        body.model.torch_prefix = TORCH_BODY_PREFIX
        return PyramidBody(body.model, list(body.strides), body.preprocess)
    raise _no_body(cfg.name)
