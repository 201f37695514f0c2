"""Layers shared by the torchvision-layout bodies: FrozenBatchNorm, PyTorch-padded convs, torch module names."""
from __future__ import annotations

from typing import Callable, Optional

import keras
import tensorflow as tf
from keras import ops

# torchvision's ImageNet statistics, on 0-1 pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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

    def call(self, x):
        """The fixed affine map, in torch's order of operations."""
        scale = self.weight * ops.rsqrt(self.running_var + self.epsilon)
        return x * scale + (self.bias - self.running_mean * scale)

    def get_config(self) -> dict:
        """Serializable config."""
        return {**super().get_config(), "epsilon": self.epsilon}


def keras_name(torch_name: str) -> str:
    """A Keras layer name for a torch module path ("layer1.0.conv1" -> "layer1_0_conv1")."""
    return torch_name.replace(".", "_")


def named(layer: keras.layers.Layer, torch_name: str) -> keras.layers.Layer:
    """Tag a weight-owning layer with its torch module path, for detkit.pretrained.torch_layers."""
    layer.torch_name = torch_name
    return layer


def norm_layer(torch_name: str, frozen: bool, epsilon: float = TORCH_BN_EPS) -> keras.layers.Layer:
    """FrozenBatchNorm (pretrained weights) or a trainable BatchNormalization with torch's eps and momentum 0.1."""
    if frozen:
        return named(FrozenBatchNorm(epsilon, name=keras_name(torch_name)), torch_name)
    return named(keras.layers.BatchNormalization(epsilon=epsilon, momentum=0.9, name=keras_name(torch_name)),
                 torch_name)


def torch_pad(x, padding: int, name: str):
    """Symmetric zero padding as torch's Conv2d(padding=p) does; TF's "same" pads unevenly at stride 2."""
    if padding == 0:
        return x
    return keras.layers.ZeroPadding2D(padding, name=name)(x)


def conv(x, filters: int, kernel: int, stride: int, torch_name: str, *, padding: Optional[int] = None,
         use_bias: bool = False, depthwise: bool = False):
    """torch.nn.Conv2d(kernel, stride, padding=(kernel - 1) // 2 unless given).

    At stride 1 with half-kernel padding TF's 'same' pads as torch does, with no extra copy of the input;
    otherwise an explicit symmetric pad, then a 'valid' conv.
    """
    pad = (kernel - 1) // 2 if padding is None else padding
    same = stride == 1 and 2 * pad == kernel - 1
    if not same:
        x = torch_pad(x, pad, keras_name(torch_name) + "_pad")
    mode = "same" if same else "valid"
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=mode, use_bias=use_bias,
                                             depthwise_initializer=CONV_INIT, name=keras_name(torch_name))
    else:
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding=mode, use_bias=use_bias,
                                    kernel_initializer=CONV_INIT, name=keras_name(torch_name))
    return named(layer, torch_name)(x)


def imagenet_preprocess(images: tf.Tensor) -> tf.Tensor:
    """0-255 RGB pixels -> torchvision's normalisation ((x / 255 - mean) / std)."""
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (tf.cast(images, tf.float32) / 255.0 - mean) / std


def freeze_where(model: keras.Model, frozen: Callable[[str], bool]) -> None:
    """Make non-trainable every torch-named layer of `model` whose torch name `frozen` accepts."""
    for layer in model.layers:
        name = getattr(layer, "torch_name", None)
        if name is not None and frozen(name):
            layer.trainable = False
