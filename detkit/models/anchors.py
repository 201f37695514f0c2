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


def rounded_base_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """torchvision's AnchorGenerator cell anchors: round([-w, -h, w, h] / 2), ratio-major, computed in float32."""
    sizes32 = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(ratios, np.float32))
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * sizes32[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes32[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0)).astype(np.float32)


def level_stride(padded_hw: tf.Tensor, feature_hw: tf.Tensor) -> tf.Tensor:
    """(stride_y, stride_x) of one pyramid level: the padded image size // the feature size, as torchvision."""
    return tf.math.floordiv(tf.cast(padded_hw, tf.int32), tf.cast(feature_hw, tf.int32))


def generate_level_anchors(feature_hw: tf.Tensor, stride_hw: tf.Tensor, sizes: Sequence[float],
                           ratios: Sequence[float]) -> tf.Tensor:
    """Anchors [H * W * K, 4] of one pyramid level as torchvision places them.

    Unlike `generate_anchors`, cell (i, j) is centred at (j * stride_x, i * stride_y) (its top-left corner)
    and the cell anchors are rounded to whole pixels; the order is row-major, then the K cell anchors.
    """
    base = tf.constant(rounded_base_anchors(sizes, ratios))
    feature_hw = tf.cast(feature_hw, tf.int32)
    stride = tf.cast(stride_hw, tf.float32)
    ys = tf.cast(tf.range(feature_hw[0]), tf.float32) * stride[0]
    xs = tf.cast(tf.range(feature_hw[1]), tf.float32) * stride[1]
    cy, cx = tf.meshgrid(ys, xs, indexing="ij")
    shifts = tf.reshape(tf.stack([cx, cy, cx, cy], axis=-1), [-1, 1, 4])
    return tf.reshape(shifts + base[None, :, :], [-1, 4])
