"""The body's starting weights for a new training run (model.base_network.weights): Keras' ImageNet weights, a
Keras weights file, or torchvision's state dict saved as .npz.

Only a new run reads them; a run's checkpoint holds every weight, so loading a trained model never needs the
file (or the internet) again.
"""
from __future__ import annotations

import os

import keras
import numpy as np

from detkit.config.schema import BaseNetworkConfig
from detkit.errors import ConfigError, StateDictError
from detkit.models import bodies
from detkit.models.faster_rcnn import FasterRCNN
from detkit.pretrained.torch_layers import load_torch_state
from detkit.pretrained.torchvision import BODY_PREFIX, body_modules


def _keras_source(cfg: BaseNetworkConfig) -> keras.Model:
    """The whole body network of `cfg.name` holding the configured weights (downloaded for "imagenet")."""
    if cfg.name in bodies.APPLICATIONS:
        ctor = getattr(keras.applications, bodies.APPLICATIONS[cfg.name][0])
        try:
            return ctor(include_top=False, weights=cfg.weights, input_shape=(None, None, 3))
        except Exception as exc:  # download failures surface as several exception types
            if cfg.weights == "imagenet":
                raise ConfigError(
                    f"config key model.base_network.weights: could not get ImageNet weights for {cfg.name} "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); on a machine without internet "
                    "set it to none or to a downloaded weights file") from None
            raise ConfigError(f"config key model.base_network.weights: cannot load {cfg.weights}: {exc}") from None
    if cfg.name == "small_resnet":
        source = bodies.small_resnet(cfg.small_widths, cfg.small_blocks)
    else:
        source, _ = bodies.tv_body(cfg.name, cfg.freeze_batchnorm, bodies.tv_stages(cfg.name))
    try:
        source.load_weights(cfg.weights)
    except Exception as exc:  # Keras raises ValueError, OSError or KeyError for files of another model
        raise ConfigError(f"config key model.base_network.weights: cannot load {cfg.weights} into {cfg.name} "
                          f"({str(exc).splitlines()[0][:160]})") from None
    return source


def _model_layers(model: FasterRCNN) -> dict[str, keras.layers.Layer]:
    """The detector's body layers (and a C4 head's conv5 tail) by name."""
    layers = {layer.name: layer for layer in model.backbone.layers}
    if model.rcnn_head is not None and model.rcnn_head.tail is not None:
        layers.update({layer.name: layer for layer in model.rcnn_head.tail.layers})
    return layers


def _copy_by_name(source: keras.Model, model: FasterRCNN) -> int:
    """Copy the weights of every source layer into the detector's layer of the same name; how many were set."""
    targets = _model_layers(model)
    count = 0
    for layer in source.layers:
        target = targets.get(layer.name)
        if target is not None and layer.weights:
            target.set_weights(layer.get_weights())
            count += 1
    return count


def _load_torch_npz(model: FasterRCNN, cfg: BaseNetworkConfig) -> None:
    """A *_tv body's weights from torchvision's state dict saved as .npz (a detector's or the ImageNet classifier's)."""
    path = cfg.weights
    with np.load(path) as data:
        state = {key: data[key] for key in data.files}
    if any(key.startswith(BODY_PREFIX) for key in state):
        prefix, allowed_unused = BODY_PREFIX, ()
    elif cfg.name == "mobilenet_v3_large_tv":
        prefix, allowed_unused = "features.", ()
    else:
        prefix, allowed_unused = "", ("fc.",)
    try:
        unused = load_torch_state(body_modules(model.backbone), state, prefix, allow_unused=True)
    except StateDictError as exc:
        raise StateDictError(f"{path}: {exc}") from None
    unexpected = [key for key in unused if not key.startswith(allowed_unused)]
    if unexpected:
        raise StateDictError(f"{path}: state dict key {unexpected[0]} is not part of {cfg.name}")


def load_initial_weights(model: FasterRCNN, cfg: BaseNetworkConfig) -> None:
    """Fill the body of a newly built detector with the weights model.base_network.weights names ("none": none)."""
    if cfg.weights == "none":
        return
    if cfg.weights != "imagenet" and not os.path.isfile(cfg.weights):
        raise ConfigError(f"config key model.base_network.weights: file {cfg.weights} not found "
                          "(use imagenet, none, or a path to a weights file)")
    if cfg.weights.endswith(".npz"):
        if cfg.name not in ("resnet50_tv", "resnet101_tv", "mobilenet_v3_large_tv"):
            raise ConfigError(f"config key model.base_network.weights: a torchvision state dict (.npz) fits the "
                              f"torchvision-layout bodies only, not {cfg.name}")
        _load_torch_npz(model, cfg)
        return
    if _copy_by_name(_keras_source(cfg), model) == 0:
        raise ConfigError(f"config key model.base_network.weights: {cfg.weights} set no layer of {cfg.name}")
