"""Final detections: per-class decoding, clipping, score threshold, per-class NMS and caps."""
from __future__ import annotations

import tensorflow as tf

from detkit.config.schema import PostprocessConfig
from detkit.models import box_ops


def detections_from_rcnn(rois: tf.Tensor, roi_valid: tf.Tensor, logits: tf.Tensor, deltas: tf.Tensor,
                         image_hw: tf.Tensor, box_weights: list[float],
                         cfg: PostprocessConfig) -> dict[str, tf.Tensor]:
    """rois [B, R, 4], logits [B, R, C+1], deltas [B, R, C, 4] -> padded detections per image."""
    probs = tf.nn.softmax(logits, axis=-1)[..., 1:]  # drop background -> [B, R, C]
    probs = tf.where(roi_valid[..., None], probs, 0.0)
    anchors = tf.broadcast_to(rois[:, :, None, :], tf.shape(deltas))
    boxes = box_ops.decode(deltas, anchors, box_weights)
    boxes = box_ops.clip(boxes, image_hw[:, None, None, :])
    if cfg.min_box_size > 0:
        big = ((boxes[..., 2] - boxes[..., 0]) >= cfg.min_box_size) & ((boxes[..., 3] - boxes[..., 1]) >= cfg.min_box_size)
        probs = tf.where(big, probs, 0.0)
    return _nms(boxes, probs, cfg)


def detections_from_rpn(proposals: tf.Tensor, scores: tf.Tensor, valid: tf.Tensor,
                        cfg: PostprocessConfig) -> dict[str, tf.Tensor]:
    """RPN-only mode: proposals with their objectness are the detections of class 1."""
    scores = tf.where(valid, scores, 0.0)
    return _nms(proposals[:, :, None, :], scores[:, :, None], cfg)


def _nms(boxes: tf.Tensor, scores: tf.Tensor, cfg: PostprocessConfig) -> dict[str, tf.Tensor]:
    """Per-class NMS over boxes [B, N, C, 4] and scores [B, N, C] with threshold and caps."""
    nms = tf.image.combined_non_max_suppression(
        boxes, scores, max_output_size_per_class=cfg.max_per_class, max_total_size=cfg.max_total,
        iou_threshold=cfg.nms_iou, score_threshold=cfg.score_threshold, pad_per_class=False, clip_boxes=False,
    )
    return {
        "boxes": nms.nmsed_boxes,
        "scores": nms.nmsed_scores,
        "labels": tf.cast(nms.nmsed_classes, tf.int32) + 1,  # 1-based, 0 is background
        "num_detections": nms.valid_detections,
    }
