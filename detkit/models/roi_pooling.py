"""RoI pooling as Luminoth and the TF Object Detection API do it: crop_and_resize, then max-pool."""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


def normalized_feature_boxes(rois: tf.Tensor, feature_hw: tf.Tensor, stride: int) -> tf.Tensor:
    """Pixel boxes (x1, y1, x2, y2) [..., 4] -> crop_and_resize boxes (y1, x1, y2, x2) on the feature map.

    Feature cell j is centred at pixel (j + 0.5) * stride, so pixel x sits at cell x / stride - 0.5,
    and crop_and_resize maps normalised n to cell n * (size - 1).
    """
    fh = tf.cast(feature_hw[0], tf.float32)
    fw = tf.cast(feature_hw[1], tf.float32)
    sx = tf.maximum(fw - 1.0, 1.0)
    sy = tf.maximum(fh - 1.0, 1.0)
    x1 = (rois[..., 0] / stride - 0.5) / sx
    y1 = (rois[..., 1] / stride - 0.5) / sy
    x2 = (rois[..., 2] / stride - 0.5) / sx
    y2 = (rois[..., 3] / stride - 0.5) / sy
    return tf.stack([y1, x1, y2, x2], axis=-1)


def roi_pool(features: tf.Tensor, rois: tf.Tensor, stride: int, crop_size: int, pool_stride: int) -> tf.Tensor:
    """features [B, H, W, C], rois [B, R, 4] in pixels -> pooled [B * R, crop/pool, crop/pool, C]."""
    batch = tf.shape(rois)[0]
    num = tf.shape(rois)[1]
    boxes = normalized_feature_boxes(rois, tf.shape(features)[1:3], stride)
    boxes = tf.reshape(boxes, [-1, 4])
    box_indices = tf.repeat(tf.range(batch), num)
    crops = tf.image.crop_and_resize(features, boxes, box_indices, [crop_size, crop_size])
    if pool_stride > 1:
        crops = tf.nn.max_pool2d(crops, pool_stride, pool_stride, "VALID")
    return crops


@dataclass(frozen=True)
class RoIPool:
    """The single-level pooler: crop_and_resize to crop_size, then max-pool by pool_stride, on the first map."""

    stride: int
    crop_size: int = 14
    pool_stride: int = 2

    def __call__(self, maps: list[tf.Tensor], rois: tf.Tensor) -> tf.Tensor:
        """maps (finest first; the first is pooled), rois [B, R, 4] in pixels -> [B * R, side, side, C]."""
        return roi_pool(maps[0], rois, self.stride, self.crop_size, self.pool_stride)
