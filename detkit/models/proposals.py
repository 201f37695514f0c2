"""Proposal generation: decode RPN deltas, clip, drop tiny boxes, top-N, NMS, top-N."""
from __future__ import annotations

import tensorflow as tf

from detkit.models import box_ops


def generate_proposals(logits: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor, image_hw: tf.Tensor,
                       pre_nms_top_n: int, post_nms_top_n: int, nms_iou: float,
                       min_size: float = 0.0) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per image: (boxes [B, N, 4], objectness [B, N], valid [B, N]) with N = post_nms_top_n, padded."""
    num_anchors = tf.shape(anchors)[0]
    k = tf.minimum(pre_nms_top_n, num_anchors)
    top = tf.math.top_k(logits, k=k, sorted=True)
    top_deltas = tf.gather(deltas, top.indices, batch_dims=1)
    top_anchors = tf.gather(anchors, top.indices)
    boxes = box_ops.decode(top_deltas, top_anchors)
    boxes = box_ops.clip(boxes, image_hw[:, None, :])
    scores = tf.sigmoid(top.values)
    keep = box_ops.min_size_mask(boxes, min_size)
    # Removed boxes get a score below the NMS threshold rather than being dropped: shapes stay static.
    scores = tf.where(keep, scores, -1.0)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[:, :, None], max_output_size_per_class=post_nms_top_n,
        max_total_size=post_nms_top_n, iou_threshold=nms_iou, score_threshold=0.0,
        pad_per_class=False, clip_boxes=False,
    )
    valid = tf.range(post_nms_top_n)[None, :] < nms.valid_detections[:, None]
    return nms.nmsed_boxes, nms.nmsed_scores, valid
