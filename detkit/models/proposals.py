"""Proposals from the RPN's outputs on any number of levels: top-N per level, decode, clip, drop small and
unlikely boxes, NMS within each level, top-N overall (torchvision's filter_proposals; one level is the classic
Faster R-CNN's)."""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detkit.models import box_ops
from detkit.models.nms import per_class_nms


@dataclass(frozen=True)
class ProposalSettings:
    """How many proposals one phase (training or inference) keeps, and which ones."""

    pre_nms_top_n: int        # per level
    post_nms_top_n: int       # overall
    nms_iou: float
    min_size: float = 0.0     # box_ops.min_size_mask
    score_threshold: float = 0.0  # objectness probability


def generate_proposals(logits: list[tf.Tensor], deltas: list[tf.Tensor], anchors: list[tf.Tensor],
                       image_hw: tf.Tensor, pre_nms_top_n: int, post_nms_top_n: int, nms_iou: float,
                       min_size: float = 0.0, score_threshold: float = 0.0
                       ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Proposals in torchvision's order: per level the top `pre_nms_top_n` objectness logits, decode, clip, drop
    boxes smaller than `min_size` and probabilities below `score_threshold`, NMS within each level, then the best
    `post_nms_top_n` overall.

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
        keep = box_ops.min_size_mask(boxes, min_size) & (scores >= score_threshold)
        # Removed boxes get score -1, under the NMS threshold, instead of being dropped: shapes stay static.
        level_scores = tf.where(keep, scores, -1.0)
        # One NMS "class" per level: a box competes only with boxes of its own level.
        one_hot = tf.one_hot(level, num_levels, on_value=True, off_value=False)
        all_scores.append(tf.where(one_hot[None, None, :], level_scores[..., None], -1.0))
        all_boxes.append(boxes)
    boxes = tf.concat(all_boxes, axis=1)
    scores = tf.concat(all_scores, axis=1)
    nms = per_class_nms(tf.tile(boxes[:, :, None, :], [1, 1, num_levels, 1]), scores, post_nms_top_n,
                        post_nms_top_n, nms_iou, score_threshold=-0.5)
    valid = tf.range(post_nms_top_n)[None, :] < nms.valid[:, None]
    return nms.boxes, tf.where(valid, nms.scores, 0.0), valid
