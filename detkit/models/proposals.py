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


def generate_multilevel_proposals(logits: list[tf.Tensor], deltas: list[tf.Tensor], anchors: list[tf.Tensor],
                                  image_hw: tf.Tensor, pre_nms_top_n: int, post_nms_top_n: int, nms_iou: float,
                                  min_size: float, score_threshold: float
                                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Proposals of a pyramid, in torchvision's order: per level the top `pre_nms_top_n` objectness logits,
    decode, clip, drop boxes with a side < `min_size` and sigmoid scores < `score_threshold`, NMS within each
    level, then the best `post_nms_top_n` overall.

    logits[l] [B, N_l], deltas[l] [B, N_l, 4], anchors[l] [N_l, 4] -> (boxes [B, P, 4], scores [B, P],
    valid [B, P]) with P = post_nms_top_n, best first, padded.
    """
    num_levels = len(logits)
    all_boxes, all_scores = [], []
    for level in range(num_levels):
        k = tf.minimum(pre_nms_top_n, tf.shape(anchors[level])[0])
        top = tf.math.top_k(logits[level], k=k, sorted=True)
        boxes = box_ops.decode(tf.gather(deltas[level], top.indices, batch_dims=1),
                               tf.gather(anchors[level], top.indices))
        boxes = box_ops.clip(boxes, image_hw[:, None, :])
        scores = tf.sigmoid(top.values)
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        keep = (w >= min_size) & (h >= min_size) & (scores >= score_threshold)
        # One NMS "class" per level: a box competes only with boxes of its own level.
        level_scores = tf.where(keep, scores, -1.0)
        one_hot = tf.one_hot(level, num_levels, on_value=True, off_value=False)
        all_scores.append(tf.where(one_hot[None, None, :], level_scores[..., None], -1.0))
        all_boxes.append(boxes)
    boxes = tf.concat(all_boxes, axis=1)
    scores = tf.concat(all_scores, axis=1)
    # Removed boxes carry score -1 and fall under the threshold; shapes stay static.
    nms = tf.image.combined_non_max_suppression(
        tf.tile(boxes[:, :, None, :], [1, 1, num_levels, 1]), scores, max_output_size_per_class=post_nms_top_n,
        max_total_size=post_nms_top_n, iou_threshold=nms_iou, score_threshold=-0.5, pad_per_class=False,
        clip_boxes=False,
    )
    valid = tf.range(post_nms_top_n)[None, :] < nms.valid_detections[:, None]
    return nms.nmsed_boxes, tf.where(valid, nms.nmsed_scores, 0.0), valid
