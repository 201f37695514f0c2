"""R-CNN stage: the head (a Keras layer), its proposal targets and its loss."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from detkit.models import box_ops, matching
from detkit.models.fold import inference_form
from detkit.models.losses import smooth_l1


class RCNNHead(keras.layers.Layer):
    """Pooled RoIs -> (class logits [N, C+1], class-specific deltas [N, C, 4]).

    With a `tail` (ResNet conv5, the "C4" design) the RoIs pass through it and an average pool; otherwise
    through fully-connected layers, flattened channel-last or (`channels_first`, torchvision's two-FC head)
    channel-first. `reduce_channels` adds a 1x1 conv that thins the feature map before
    RoI pooling (Light-Head R-CNN): the per-RoI work then no longer scales with the backbone's width.
    """

    def __init__(self, num_classes: int, fc_sizes: list[int], dropout: float = 0.0,
                 tail: keras.Model | None = None, reduce_channels: int = 0, channels_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.tail = tail
        self.channels_first = channels_first
        self.reduce = (
            keras.layers.Conv2D(reduce_channels, 1, activation="relu", name="rcnn_reduce")
            if reduce_channels > 0 and tail is None else None
        )
        self.flatten = keras.layers.Flatten()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.fcs = [] if tail is not None else [
            keras.layers.Dense(size, activation="relu", name=f"rcnn_fc{i + 1}") for i, size in enumerate(fc_sizes)
        ]
        # tf.train.Checkpoint does not follow layers held in a Python list: name each one as an attribute.
        for i, fc in enumerate(self.fcs):
            setattr(self, f"fc{i + 1}", fc)
        self.dropouts = [keras.layers.Dropout(dropout) for _ in self.fcs]
        self.cls = keras.layers.Dense(num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                      name="rcnn_cls")
        self.box = keras.layers.Dense(4 * num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                                      name="rcnn_box")

    def reduce_features(self, features: tf.Tensor) -> tf.Tensor:
        """The feature map the RoIs are pooled from: thinned by the 1x1 conv when one is configured."""
        return features if self.reduce is None else self.reduce(features)

    def call(self, pooled: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """pooled [N, h, w, C] -> (logits [N, C+1], deltas [N, C, 4])."""
        if self.tail is not None:
            tail = self.tail if training else inference_form(self.tail)
            x = self.pool(tail(pooled, training=training))
        else:
            # torchvision's TwoMLPHead flattens (C, H, W): its fc6 weights then apply unchanged.
            x = self.flatten(tf.transpose(pooled, [0, 3, 1, 2]) if self.channels_first else pooled)
            for fc, drop in zip(self.fcs, self.dropouts):
                x = drop(fc(x), training=training)
        logits = self.cls(x)
        deltas = tf.reshape(self.box(x), [-1, self.num_classes, 4])
        return logits, deltas


def rcnn_targets(proposals: tf.Tensor, proposal_valid: tf.Tensor, gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                 gt_valid: tf.Tensor, sampling: matching.Sampling, box_weights: Sequence[float],
                 add_gt_boxes: bool = True) -> dict[str, tf.Tensor]:
    """Sample RoIs per image and return their boxes [B, M, 4], class labels [B, M] (0 = background,
    -1 = empty slot) and class-agnostic encoded targets [B, M, 4] for the matched ground truth."""
    if add_gt_boxes:
        proposals = tf.concat([proposals, gt_boxes], axis=1)
        proposal_valid = tf.concat([proposal_valid, gt_valid], axis=1)
    iou = box_ops.pairwise_iou(proposals, gt_boxes)
    s = sampling
    labels, matched = matching.match(iou, gt_valid, s.foreground_iou, s.background_iou_high,
                                     s.background_iou_low, low_quality=False)
    labels = tf.where(proposal_valid, labels, matching.IGNORE)
    indices, valid = matching.sample_balanced(labels, s.minibatch_size, s.foreground_fraction)
    out = matching.gather_targets(proposals, labels, matched, gt_boxes, indices, valid, tuple(box_weights))
    gt_class = tf.gather(gt_labels, out["gt_index"], batch_dims=1)
    out["labels"] = tf.where(out["labels"] == matching.FOREGROUND, tf.cast(gt_class, tf.int32), out["labels"])
    return out


def rcnn_loss(logits: tf.Tensor, deltas: tf.Tensor, labels: tf.Tensor, box_targets: tf.Tensor,
              beta: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(softmax cross-entropy over sampled RoIs, smooth L1 on the true class's deltas / sampled count).

    logits [N, C+1], deltas [N, C, 4], labels [N] (-1 = empty slot), box_targets [N, 4].
    """
    valid = tf.cast(labels >= 0, tf.float32)
    num = tf.maximum(tf.reduce_sum(valid), 1.0)
    safe_labels = tf.maximum(labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    cls_loss = tf.reduce_sum(ce * valid) / num
    fg = tf.cast(labels > 0, tf.float32)
    class_deltas = tf.gather(deltas, tf.maximum(safe_labels - 1, 0), batch_dims=1)  # [N, 4]
    box = tf.reduce_sum(smooth_l1(class_deltas - box_targets, beta), axis=-1)
    box_loss = tf.reduce_sum(box * fg) / num
    return cls_loss, box_loss
