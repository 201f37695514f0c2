"""Region proposal network: the head (a Keras layer), its targets and its loss."""
from __future__ import annotations

import keras
import tensorflow as tf

from detkit.models import box_ops, matching
from detkit.models.losses import smooth_l1


class RPNHead(keras.layers.Layer):
    """3x3 conv + ReLU, then 1x1 convs for K objectness logits and 4K box deltas per location."""

    def __init__(self, channels: int, num_anchors: int, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                        kernel_initializer=init, name="rpn_conv")
        self.cls = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init, name="rpn_cls")
        self.box = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, name="rpn_box")

    def call(self, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """features [B, H, W, C] -> (logits [B, H*W*K], deltas [B, H*W*K, 4])."""
        x = self.conv(features)
        batch = tf.shape(features)[0]
        logits = tf.reshape(self.cls(x), [batch, -1])
        deltas = tf.reshape(self.box(x), [batch, -1, 4])
        return logits, deltas


def rpn_targets(anchors: tf.Tensor, image_hw: tf.Tensor, gt_boxes: tf.Tensor, gt_valid: tf.Tensor,
                sampling: matching.Sampling, low_quality: bool = True,
                allowed_border: float = -1.0) -> dict[str, tf.Tensor]:
    """Sample a balanced anchor minibatch per image and return its indices, labels and box targets.

    anchors [A, 4]; image_hw [B, 2] (the real image size inside the padded batch); gt [B, G, 4].
    With allowed_border >= 0, anchors crossing the image border by more than that are ignored, as in
    the paper; a negative value keeps them (torchvision, Detectron2), which suits objects touching the border.
    """
    batch = tf.shape(gt_boxes)[0]
    tiled = tf.broadcast_to(anchors[None], [batch, tf.shape(anchors)[0], 4])
    iou = box_ops.pairwise_iou(tiled, gt_boxes)
    s = sampling
    labels, matched = matching.match(iou, gt_valid, s.foreground_iou, s.background_iou_high, s.background_iou_low,
                                     low_quality)
    if allowed_border >= 0:
        inside = box_ops.inside_mask(tiled, image_hw[:, None, :], allowed_border)
        labels = tf.where(inside, labels, matching.IGNORE)
    indices, valid = matching.sample_balanced(labels, s.minibatch_size, s.foreground_fraction)
    out = matching.gather_targets(tiled, labels, matched, gt_boxes, indices, valid, (1.0, 1.0, 1.0, 1.0))
    out["indices"] = indices
    return out


def rpn_loss(logits: tf.Tensor, deltas: tf.Tensor, targets: dict[str, tf.Tensor],
             beta: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(objectness BCE over the sampled anchors, smooth L1 over sampled foreground / sampled count)."""
    idx = targets["indices"]
    labels = targets["labels"]
    valid = tf.cast(labels >= 0, tf.float32)
    num_sampled = tf.maximum(tf.reduce_sum(valid), 1.0)
    sampled_logits = tf.gather(logits, idx, batch_dims=1)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels > 0, tf.float32), logits=sampled_logits)
    cls_loss = tf.reduce_sum(bce * valid) / num_sampled
    fg = tf.cast(labels > 0, tf.float32)
    sampled_deltas = tf.gather(deltas, idx, batch_dims=1)
    box = tf.reduce_sum(smooth_l1(sampled_deltas - targets["box_targets"], beta), axis=-1)
    box_loss = tf.reduce_sum(box * fg) / num_sampled
    return cls_loss, box_loss
