"""Anchor generation: every (size, ratio) pair at every feature-map point."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def base_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """The K = len(sizes) * len(ratios) anchors centred on (0, 0), ordered ratio-major as (x1, y1, x2, y2).

    `size` is the square root of the area and `ratio` is height / width, so every ratio of one
    size covers the same area.
    """
    out = []
    for ratio in ratios:
        for size in sizes:
            w = size / np.sqrt(ratio)
            h = size * np.sqrt(ratio)
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(out, dtype=np.float32)


def num_anchors_per_location(sizes: Sequence[float], ratios: Sequence[float]) -> int:
    """K: how many anchors sit at each feature-map point."""
    return len(sizes) * len(ratios)


def generate_anchors(feature_hw: tf.Tensor, stride: int, sizes: Sequence[float],
                     ratios: Sequence[float]) -> tf.Tensor:
    """All anchors [H * W * K, 4] for a feature map of size (H, W), row-major then per-location.

    Feature cell (i, j) is centred at ((j + 0.5) * stride, (i + 0.5) * stride) in image pixels;
    the order matches a [B, H, W, K] head output reshaped to [B, H * W * K].
    """
    base = tf.constant(base_anchors(sizes, ratios))
    feature_hw = tf.cast(feature_hw, tf.int32)
    ys = (tf.cast(tf.range(feature_hw[0]), tf.float32) + 0.5) * stride
    xs = (tf.cast(tf.range(feature_hw[1]), tf.float32) + 0.5) * stride
    cy, cx = tf.meshgrid(ys, xs, indexing="ij")
    shifts = tf.stack([cx, cy, cx, cy], axis=-1)  # [H, W, 4]
    anchors = shifts[:, :, None, :] + base[None, None, :, :]  # [H, W, K, 4]
    return tf.reshape(anchors, [-1, 4])
