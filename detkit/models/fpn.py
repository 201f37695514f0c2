"""Feature Pyramid Network (torchvision's FeaturePyramidNetwork + LastLevelMaxPool) and its two pure ops."""
from __future__ import annotations

import keras
import tensorflow as tf


def upsample_nearest(x: tf.Tensor, size_hw: tf.Tensor) -> tf.Tensor:
    """x [B, h, w, C] -> [B, H, W, C] as torch's F.interpolate(size=(H, W), mode="nearest").

    Output row i reads input row min(floor(i * h / H), h - 1) (the scale computed in float32, as torch does).
    """
    in_hw = tf.shape(x)[1:3]
    out = []
    for axis in (0, 1):
        scale = tf.cast(in_hw[axis], tf.float32) / tf.cast(size_hw[axis], tf.float32)
        src = tf.cast(tf.floor(tf.cast(tf.range(size_hw[axis]), tf.float32) * scale), tf.int32)
        out.append(tf.minimum(src, in_hw[axis] - 1))
    return tf.gather(tf.gather(x, out[0], axis=1), out[1], axis=2)


def last_level_max_pool(x: tf.Tensor) -> tf.Tensor:
    """torchvision's LastLevelMaxPool, F.max_pool2d(x, kernel 1, stride 2): every second pixel from (0, 0)."""
    # A pooling op rather than a strided slice: OpenVINO's TensorFlow frontend gives such a slice its input's shape.
    return tf.nn.max_pool2d(x, 1, 2, "VALID")


class FPN(keras.layers.Layer):
    """Lateral 1x1 and output 3x3 convs (with bias) over C_i, nearest top-down path, P_last+1 by max-pool.

    Inputs are ordered finest first; outputs are the same number of maps plus the pooled one, `channels` wide.
    """

    def __init__(self, channels: int, num_inputs: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.num_inputs = num_inputs
        # torchvision initialises both with kaiming_uniform_(a=1): uniform, variance 1 / fan_in.
        init = "lecun_uniform"
        self.inner_blocks, self.layer_blocks = [], []
        for i in range(num_inputs):
            inner = keras.layers.Conv2D(channels, 1, kernel_initializer=init, name=f"inner_{i}")
            layer = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=init, name=f"layer_{i}")
            # tf.train.Checkpoint does not follow layers held in a Python list: name each one as an attribute.
            setattr(self, f"inner_{i}", inner)
            setattr(self, f"layer_{i}", layer)
            self.inner_blocks.append(inner)
            self.layer_blocks.append(layer)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        """[C_a, ..., C_b] (finest first) -> [P_a, ..., P_b, P_b+1]."""
        if len(inputs) != self.num_inputs:
            raise ValueError(f"FPN built for {self.num_inputs} inputs, got {len(inputs)}")
        last = self.inner_blocks[-1](inputs[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self.inner_blocks[i](inputs[i])
            last = lateral + upsample_nearest(last, tf.shape(lateral)[1:3])
            results.insert(0, self.layer_blocks[i](last))
        results.append(last_level_max_pool(results[-1]))
        return results
