"""Final detections: per-class decoding, clipping, minimum size, score threshold, per-class NMS and caps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import tensorflow as tf

from detkit.models import box_ops
from detkit.models.nms import per_class_nms


@dataclass(frozen=True)
class DetectionSettings:
    """Which detections are kept: score threshold, per-class NMS, caps and minimum size (box_ops.min_size_mask)."""

    score_threshold: float
    nms_iou: float
    max_per_class: int
    max_total: int
    min_box_size: float = 0.0


def detections_from_rcnn(rois: tf.Tensor, roi_valid: tf.Tensor, logits: tf.Tensor, deltas: tf.Tensor,
                         image_hw: tf.Tensor, box_weights: Sequence[float],
                         settings: DetectionSettings) -> dict[str, tf.Tensor]:
    """rois [B, R, 4], logits [B, R, C+1], deltas [B, R, C, 4] -> padded detections per image."""
    probs = tf.nn.softmax(logits, axis=-1)[..., 1:]  # drop background -> [B, R, C]
    probs = tf.where(roi_valid[..., None], probs, 0.0)
    anchors = tf.broadcast_to(rois[:, :, None, :], tf.shape(deltas))
    boxes = box_ops.decode(deltas, anchors, box_weights)
    boxes = box_ops.clip(boxes, image_hw[:, None, None, :])
    probs = tf.where(box_ops.min_size_mask(boxes, settings.min_box_size), probs, 0.0)
    return _nms(boxes, probs, settings)


def detections_from_rpn(proposals: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                        settings: DetectionSettings) -> dict[str, tf.Tensor]:
    """RPN-only mode: proposals with their objectness are the detections of class 1."""
    scores = tf.where(valid, scores, 0.0)
    return _nms(proposals[:, :, None, :], scores[:, :, None], settings)


def _nms(boxes: tf.Tensor, scores: tf.Tensor, settings: DetectionSettings) -> dict[str, tf.Tensor]:
    """Per-class NMS over boxes [B, N, C, 4] and scores [B, N, C] with threshold and caps."""
    nms = per_class_nms(boxes, scores, settings.max_per_class, settings.max_total, settings.nms_iou,
                        settings.score_threshold)
    return {
        "boxes": nms.boxes,
        "scores": nms.scores,
        "labels": tf.cast(nms.classes, tf.int32) + 1,  # 1-based, 0 is background
        "num_detections": nms.valid,
    }
