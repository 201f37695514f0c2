"""RoIAlign (torchvision's roi_align, aligned=False) on one feature map and over an FPN's levels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf


def _sample_boxes(rois: tf.Tensor, spatial_scale: float, output_size: int, sampling_ratio: int,
                  feature_hw: tf.Tensor) -> tf.Tensor:
    """crop_and_resize boxes whose sample grid is roi_align's, on the map padded by one edge pixel per side.

    roi_align samples bin (p, s) of an RoI at start + (p * n + s + 0.5) * size / (output_size * n) for
    n = sampling_ratio, with size = max(end - start, 1): an evenly spaced grid of output_size * n points
    per axis, which crop_and_resize reproduces by putting its first and last samples on them.
    """
    n = output_size * sampling_ratio
    out = []
    for lo, hi, size in ((1, 3, feature_hw[0]), (0, 2, feature_hw[1])):
        start = rois[..., lo] * spatial_scale
        extent = tf.maximum(rois[..., hi] * spatial_scale - start, 1.0)
        step = extent / n
        first = start + 0.5 * step + 1.0  # +1: the padded map's index
        last = start + (n - 0.5) * step + 1.0
        span = tf.cast(size, tf.float32) + 1.0  # (padded size - 1)
        out.append((first / span, last / span))
    (y1, y2), (x1, x2) = out
    return tf.stack([y1, x1, y2, x2], axis=-1)


def roi_align(features: tf.Tensor, rois: tf.Tensor, box_indices: tf.Tensor, spatial_scale: float,
              output_size: int = 7, sampling_ratio: int = 2) -> tf.Tensor:
    """features [B, H, W, C], rois [N, 4] (x1, y1, x2, y2 image pixels) of images box_indices [N]
    -> [N, output_size, output_size, C], each bin the mean of sampling_ratio^2 bilinear samples.

    Borders as torchvision's CPU kernel: a sample within one pixel outside the map reads the edge pixel
    (coordinates clamped), one further out reads 0. Replicating the edge once around the map and sampling
    with crop_and_resize (zero outside the padded map) gives exactly that.
    """
    feature_hw = tf.shape(features)[1:3]
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    boxes = _sample_boxes(tf.cast(rois, tf.float32), spatial_scale, output_size, sampling_ratio, feature_hw)
    n = output_size * sampling_ratio
    crops = tf.image.crop_and_resize(padded, boxes, box_indices, [n, n], extrapolation_value=0.0)
    if sampling_ratio == 1:
        return crops
    # Means over reshapes rather than AvgPool, which OpenVINO refuses on an empty batch (an FPN level no RoI is
    # assigned to); rows then columns, each over the middle axis of a 3-D tensor: OpenVINO runs one 6-D mean
    # over two axes with its reference kernel (26 of 48 ms of a pyramid model).
    channels = crops.shape[-1] if crops.shape[-1] is not None else tf.shape(crops)[-1]
    rows = tf.reduce_mean(tf.reshape(crops, [-1, sampling_ratio, n * channels]), axis=1)
    bins = tf.reduce_mean(tf.reshape(rows, [-1, sampling_ratio, channels]), axis=1)
    return tf.reshape(bins, [-1, output_size, output_size, channels])


def assign_levels(rois: tf.Tensor, k_min: int, k_max: int, canonical_size: float = 224.0,
                  canonical_level: int = 4) -> tf.Tensor:
    """FPN level index (0 = level k_min) of each box: floor(k0 + log2(sqrt(area) / s0) + 1e-6), clamped."""
    w = rois[..., 2] - rois[..., 0]
    h = rois[..., 3] - rois[..., 1]
    scale = tf.sqrt(w * h)
    k = tf.floor(canonical_level + tf.math.log(scale / canonical_size) / tf.math.log(2.0) + 1e-6)
    k = tf.clip_by_value(k, float(k_min), float(k_max))
    return tf.cast(k, tf.int32) - k_min


def multilevel_roi_align(features: Sequence[tf.Tensor], strides: Sequence[int], rois: tf.Tensor,
                         output_size: int = 7, sampling_ratio: int = 2, canonical_size: float = 224.0,
                         canonical_level: int = 4) -> tf.Tensor:
    """torchvision's MultiScaleRoIAlign: rois [B, R, 4] -> [B * R, output_size, output_size, C], each RoI
    pooled from the level its size assigns it to (features[l] has stride strides[l], finest first)."""
    batch = tf.shape(rois)[0]
    num = tf.shape(rois)[1]
    flat = tf.reshape(tf.cast(rois, tf.float32), [-1, 4])
    image_index = tf.repeat(tf.range(batch), num)
    if len(features) == 1 or len(set(strides)) == 1:
        return roi_align(features[0], flat, image_index, 1.0 / strides[0], output_size, sampling_ratio)
    levels_k = [int(round(math.log2(s))) for s in strides]
    levels = assign_levels(flat, levels_k[0], levels_k[-1], canonical_size, canonical_level)
    positions = tf.range(tf.shape(flat)[0])
    parts_rois = tf.dynamic_partition(flat, levels, len(features))
    parts_index = tf.dynamic_partition(image_index, levels, len(features))
    parts_pos = tf.dynamic_partition(positions, levels, len(features))
    pooled = [roi_align(f, r, i, 1.0 / s, output_size, sampling_ratio)
              for f, r, i, s in zip(features, parts_rois, parts_index, strides)]
    return tf.dynamic_stitch(parts_pos, pooled)


@dataclass(frozen=True)
class MultiLevelRoIAlign:
    """The pyramid's pooler (torchvision's MultiScaleRoIAlign) over the levels of `strides`, finest first."""

    strides: tuple[int, ...]
    output_size: int = 7
    sampling_ratio: int = 2
    canonical_size: float = 224.0
    canonical_level: int = 4

    def __call__(self, maps: list[tf.Tensor], rois: tf.Tensor) -> tf.Tensor:
        """maps (finest first; those of `strides` are pooled), rois [B, R, 4] -> [B * R, size, size, C]."""
        return multilevel_roi_align(maps[:len(self.strides)], self.strides, rois, self.output_size,
                                    self.sampling_ratio, self.canonical_size, self.canonical_level)
