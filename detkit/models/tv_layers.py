"""Layers shared by the torchvision-layout bodies: FrozenBatchNorm, convs padded as PyTorch pads, layer names.

Every weight-owning layer is named after its module path in torchvision's model with "." replaced by "_"
(`layer1.0.conv1` -> `layer1_0_conv1`), which is how detkit.pretrained maps torchvision's weights onto it.
"""
from __future__ import annotations

from typing import Callable, Optional

import keras
from keras import ops

# Default eps of torch.nn.BatchNorm2d and torchvision.ops.FrozenBatchNorm2d.
TORCH_BN_EPS = 1e-5
# kaiming_normal_(mode="fan_out"), as torchvision initialises its convs.
CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


@keras.saving.register_keras_serializable(package="detkit")
class FrozenBatchNorm(keras.layers.Layer):
    """torchvision's FrozenBatchNorm2d: y = x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps)), all fixed."""

    def __init__(self, epsilon: float = TORCH_BN_EPS, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape) -> None:
        """Four non-trainable vectors named as torch's buffers."""
        c = (input_shape[-1],)
        self.weight = self.add_weight(name="weight", shape=c, initializer="ones", trainable=False)
        self.bias = self.add_weight(name="bias", shape=c, initializer="zeros", trainable=False)
        self.running_mean = self.add_weight(name="running_mean", shape=c, initializer="zeros", trainable=False)
        self.running_var = self.add_weight(name="running_var", shape=c, initializer="ones", trainable=False)

    def affine(self):
        """(scale, shift) [C] of the map x * scale + shift, in torch's order of operations."""
        scale = self.weight * ops.rsqrt(self.running_var + self.epsilon)
        return scale, self.bias - self.running_mean * scale

    def call(self, x):
        """The fixed affine map."""
        scale, shift = self.affine()
        return x * scale + shift

    def get_config(self) -> dict:
        """Serializable config."""
        return {**super().get_config(), "epsilon": self.epsilon}


def keras_name(path: str) -> str:
    """The Keras layer name of a module path in torchvision's layout ("layer1.0.conv1" -> "layer1_0_conv1")."""
    return path.replace(".", "_")


def norm_layer(path: str, frozen: bool, epsilon: float = TORCH_BN_EPS) -> keras.layers.Layer:
    """FrozenBatchNorm (pretrained weights) or a trainable BatchNormalization with torch's eps and momentum 0.1."""
    if frozen:
        return FrozenBatchNorm(epsilon, name=keras_name(path))
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=0.9, name=keras_name(path))


def symmetric_pad(x, padding: int, name: str):
    """Symmetric zero padding as torch's Conv2d(padding=p) does; TF's "same" pads unevenly at stride 2."""
    if padding == 0:
        return x
    return keras.layers.ZeroPadding2D(padding, name=name)(x)


def conv(x, filters: int, kernel: int, stride: int, path: str, *, padding: Optional[int] = None,
         use_bias: bool = False, depthwise: bool = False):
    """torch.nn.Conv2d(kernel, stride, padding=(kernel - 1) // 2 unless given).

    At stride 1 with half-kernel padding TF's 'same' pads as torch does, with no extra copy of the input;
    otherwise an explicit symmetric pad, then a 'valid' conv.
    """
    pad = (kernel - 1) // 2 if padding is None else padding
    same = stride == 1 and 2 * pad == kernel - 1
    if not same:
        x = symmetric_pad(x, pad, keras_name(path) + "_pad")
    mode = "same" if same else "valid"
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=mode, use_bias=use_bias,
                                             depthwise_initializer=CONV_INIT, name=keras_name(path))
    else:
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding=mode, use_bias=use_bias,
                                    kernel_initializer=CONV_INIT, name=keras_name(path))
    return layer(x)


def freeze_where(model: keras.Model, frozen: Callable[[str], bool]) -> None:
    """Make non-trainable every weight-owning layer of `model` whose module path `frozen` accepts."""
    for layer in model.layers:
        if layer.weights and frozen(layer.name.replace("_", ".")):
            layer.trainable = False
