"""Pure box functions: area, IoU, delta encoding (a BoxCoder), clipping, filtering.

Boxes are (xmin, ymin, xmax, ymax) in pixels of the resized image, continuous coordinates
(width = xmax - xmin, no +1), in the last axis of any-rank tensors.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

# exp() of a larger dw/dh would overflow or produce absurd boxes early in training.
DEFAULT_DELTA_CLAMP = math.log(1000.0 / 16.0)


def area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of each box; degenerate boxes have area 0."""
    w = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def pairwise_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of every box in a [..., N, 4] with every box in b [..., M, 4] -> [..., N, M]."""
    a = tf.convert_to_tensor(a, tf.float32)
    b = tf.convert_to_tensor(b, tf.float32)
    ax1, ay1, ax2, ay2 = [a[..., :, None, i] for i in range(4)]
    bx1, by1, bx2, by2 = [b[..., None, :, i] for i in range(4)]
    iw = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    ih = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = area(a)[..., :, None] + area(b)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def _centers(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(cx, cy, w, h) of boxes."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> tf.Tensor:
    """Regression targets (dx, dy, dw, dh) that turn `anchors` into `boxes`, times `weights`."""
    cx, cy, w, h = _centers(boxes)
    acx, acy, aw, ah = _centers(anchors)
    # Guard against zero-size anchors/boxes (padding rows); their targets are never used.
    aw = tf.maximum(aw, 1e-6)
    ah = tf.maximum(ah, 1e-6)
    w = tf.maximum(w, 1e-6)
    h = tf.maximum(h, 1e-6)
    wx, wy, ww, wh = weights
    return tf.stack(
        [wx * (cx - acx) / aw, wy * (cy - acy) / ah, ww * tf.math.log(w / aw), wh * tf.math.log(h / ah)], axis=-1
    )


def decode(deltas: tf.Tensor, anchors: tf.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
           clamp: float = DEFAULT_DELTA_CLAMP) -> tf.Tensor:
    """Apply deltas (dx, dy, dw, dh) / weights to anchors; dw, dh clamped before exp()."""
    acx, acy, aw, ah = _centers(anchors)
    wx, wy, ww, wh = weights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = tf.minimum(deltas[..., 2] / ww, clamp)
    dh = tf.minimum(deltas[..., 3] / wh, clamp)
    cx = dx * aw + acx
    cy = dy * ah + acy
    w = tf.exp(dw) * aw
    h = tf.exp(dh) * ah
    return tf.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip(boxes: tf.Tensor, image_hw: tf.Tensor) -> tf.Tensor:
    """Clip boxes to [0, width] x [0, height]; image_hw [..., 2] = (height, width) broadcasts like boxes[..., 0]."""
    image_hw = tf.cast(image_hw, boxes.dtype)
    h = image_hw[..., 0]
    w = image_hw[..., 1]
    x1 = tf.clip_by_value(boxes[..., 0], 0.0, w)
    y1 = tf.clip_by_value(boxes[..., 1], 0.0, h)
    x2 = tf.clip_by_value(boxes[..., 2], 0.0, w)
    y2 = tf.clip_by_value(boxes[..., 3], 0.0, h)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def min_size_mask(boxes: tf.Tensor, min_size: float) -> tf.Tensor:
    """True where a box is at least `min_size` wide and high; a box of no width or height is never kept.

    The one meaning of "minimum box size" for proposals and detections (torchvision's remove_small_boxes, which
    its detectors call with a small positive size, so that degenerate boxes go too).
    """
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return (w >= min_size) & (h >= min_size) & (w > 0) & (h > 0)


def inside_mask(boxes: tf.Tensor, image_hw: tf.Tensor, allowed_border: float = 0.0) -> tf.Tensor:
    """True where a box lies inside the image (image_hw as in clip), give or take `allowed_border` pixels."""
    image_hw = tf.cast(image_hw, boxes.dtype)
    h = image_hw[..., 0]
    w = image_hw[..., 1]
    return (
        (boxes[..., 0] >= -allowed_border)
        & (boxes[..., 1] >= -allowed_border)
        & (boxes[..., 2] <= w + allowed_border)
        & (boxes[..., 3] <= h + allowed_border)
    )
