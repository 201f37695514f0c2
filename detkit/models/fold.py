"""Batch normalisation folded into the convolution before it, for inference.

In inference a BatchNorm (frozen, or Keras' in inference mode) is a fixed affine map per channel, so
conv(x, k) * s + t == conv(x, k * s) + t: one convolution with a bias, which TensorFlow's oneDNN graph pass fuses
with the activation after it, in place of a convolution and two elementwise passes over its output. The folded
model runs the original layers' variables at every call (the folded kernels are a few multiplications of
weights, not copies), so restoring a checkpoint or training the original never leaves it stale.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Union

import keras
import tensorflow as tf

from detkit.models.tv_layers import FrozenBatchNorm

Conv = Union[keras.layers.Conv2D, keras.layers.DepthwiseConv2D]
Norm = Union[FrozenBatchNorm, keras.layers.BatchNormalization]


def norm_affine(norm: Norm) -> tuple[tf.Tensor, tf.Tensor]:
    """(scale, shift) float32 [C] such that the inference-mode norm is x * scale + shift."""
    if isinstance(norm, FrozenBatchNorm):
        return tuple(tf.cast(t, tf.float32) for t in norm.affine())
    gamma = norm.gamma if norm.scale else 1.0
    beta = norm.beta if norm.center else 0.0
    mean, var = norm.moving_mean, norm.moving_variance
    scale = tf.cast(gamma, tf.float32) * tf.math.rsqrt(tf.cast(var, tf.float32) + norm.epsilon)
    return scale, tf.cast(beta, tf.float32) - tf.cast(mean, tf.float32) * scale


def folded_weights(conv: Conv, norm: Norm) -> tuple[tf.Tensor, tf.Tensor]:
    """(kernel, bias) float32 of the convolution that equals `norm(conv(x))` in inference."""
    scale, shift = norm_affine(norm)
    kernel = tf.cast(conv.kernel, tf.float32)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # Depthwise kernels are [kh, kw, in, multiplier]; output channel c * multiplier + m.
        kernel = kernel * tf.reshape(scale, [1, 1, kernel.shape[2], kernel.shape[3]])
    else:
        kernel = kernel * scale
    bias = shift + tf.cast(conv.bias, tf.float32) * scale if conv.use_bias else shift
    return kernel, bias


class FoldedConv(keras.layers.Layer):
    """A convolution and the norm after it, run as one biased convolution on their variables (no weights of its
    own: it reads theirs at every call)."""

    def __init__(self, conv: Conv, norm: Norm, **kwargs):
        # autocast=False: the weights are read in float32 and cast once folded, not rounded before the product.
        super().__init__(name=conv.name, dtype=conv.dtype_policy, autocast=False, **kwargs)
        # Not tracked: the variables belong to the original layers, which checkpoints already hold.
        object.__setattr__(self, "_pair", (conv, norm))

    def call(self, x, **kwargs):
        """norm(conv(x)) in inference, as conv(x, k * s) + t (the norm's training and mask arguments unused)."""
        conv, norm = self._pair
        kernel, bias = folded_weights(conv, norm)
        kernel, bias = tf.cast(kernel, x.dtype), tf.cast(bias, x.dtype)
        strides = (1, *conv.strides, 1)
        padding = conv.padding.upper()
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            y = tf.nn.depthwise_conv2d(x, kernel, strides, padding, dilations=conv.dilation_rate)
        else:
            y = tf.nn.conv2d(x, kernel, strides, padding, dilations=conv.dilation_rate)
        return tf.nn.bias_add(y, bias)

    def compute_output_shape(self, input_shape):
        """The convolution's output shape."""
        return self._pair[0].compute_output_shape(input_shape)


class FoldedNorm(keras.layers.Layer):
    """Where a norm was: its map now runs inside the convolution before it, so this passes its input on."""

    def call(self, x, **kwargs):
        """x (the norm's training and mask arguments unused)."""
        return x

    def compute_output_shape(self, input_shape):
        """The input's shape."""
        return input_shape


def _foldable_conv(layer: keras.layers.Layer) -> bool:
    """A channels-last, ungrouped, linear 2-D convolution (what conv(x, k * s) + t reproduces)."""
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return False
    grouped = getattr(layer, "groups", 1) != 1
    linear = layer.activation in (None, keras.activations.linear)
    return layer.data_format == "channels_last" and linear and not grouped


def _foldable_norm(layer: keras.layers.Layer) -> bool:
    """A FrozenBatchNorm, or a BatchNormalization over the last axis."""
    if isinstance(layer, FrozenBatchNorm):
        return True
    return isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, 3)


def foldable_pairs(model: keras.Model) -> dict[str, Norm]:
    """Conv layer name -> the norm layer that is its output's only consumer in `model`'s graph."""
    consumers: dict[int, list] = {}
    producer: dict[int, keras.layers.Layer] = {}
    uses: dict[int, int] = {}
    for nodes in model._nodes_by_depth.values():  # noqa: SLF001 - Keras keeps a functional graph's nodes here
        for node in nodes:
            uses[id(node.operation)] = uses.get(id(node.operation), 0) + 1
            for tensor in node.input_tensors:
                consumers.setdefault(id(tensor), []).append(node.operation)
            for tensor in node.outputs:
                producer[id(tensor)] = node.operation
    for tensor in keras.tree.flatten(model.outputs):
        consumers.setdefault(id(tensor), []).append(None)
    pairs: dict[str, Norm] = {}
    for tensor_id, layer in producer.items():
        users = consumers.get(tensor_id, [])
        if not (_foldable_conv(layer) and len(users) == 1 and users[0] is not None and _foldable_norm(users[0])):
            continue
        # A layer called twice is replaced at both calls, so only layers called once are folded.
        if uses[id(layer)] == 1 and uses[id(users[0])] == 1:
            pairs[layer.name] = users[0]
    return pairs


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An inference-only functional model equal to `model` in inference mode, each conv followed only by a norm
    run as one biased conv; it shares `model`'s variables. A model that is not functional is returned as is."""
    if not hasattr(model, "_nodes_by_depth"):
        return model
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    norms = {norm.name for norm in pairs.values()}

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs:
            return FoldedConv(layer, pairs[layer.name])
        if layer.name in norms:
            return FoldedNorm(name=layer.name, dtype=layer.dtype_policy)
        return layer

    return keras.models.clone_model(model, clone_function=replace)


_switch = threading.local()


@contextlib.contextmanager
def unfolded() -> Iterator[None]:
    """Within it (in this thread), `inference_form` gives each model as it is: for a graph traced for a runtime that
    folds BatchNorm itself."""
    before = getattr(_switch, "unfolded", False)
    _switch.unfolded = True
    try:
        yield
    finally:
        _switch.unfolded = before


def inference_form(model: keras.Model) -> keras.Model:
    """`fold_batchnorm(model)`, made at the first call and kept on `model` (untracked: checkpoints, which name
    weights by attribute, never see it; it holds no weights of its own); `model` itself within `unfolded()`."""
    if getattr(_switch, "unfolded", False):
        return model
    cached = model.__dict__.get("_detkit_folded")
    if cached is None:
        cached = fold_batchnorm(model)
        object.__setattr__(model, "_detkit_folded", cached)
    return cached
