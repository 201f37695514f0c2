"""IoU matching of candidates to ground truth, and balanced minibatch sampling (both stages).

Everything is batched: candidates [B, A, 4], ground truth padded to [B, G, 4] with a validity mask.
Labels are 1 (foreground), 0 (background) and -1 (ignored).
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detkit.models import box_ops

FOREGROUND = 1
BACKGROUND = 0
IGNORE = -1


@dataclass(frozen=True)
class Sampling:
    """One stage's IoU matching thresholds and balanced minibatch (torchvision's Matcher + sampler settings)."""

    foreground_iou: float
    background_iou_high: float
    background_iou_low: float
    minibatch_size: int
    foreground_fraction: float


def match(iou: tf.Tensor, gt_valid: tf.Tensor, foreground_iou: float, background_iou_high: float,
          background_iou_low: float = 0.0, low_quality: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """Label candidates from their IoU [B, A, G] with valid ground truth; return (labels [B, A], gt index [B, A]).

    IoU >= foreground_iou: foreground; background_iou_low <= IoU < background_iou_high: background;
    the rest are ignored. With low_quality, the candidates that are the best match of some ground-truth
    box become foreground too, so every box gets at least one candidate even when none passes the threshold.
    """
    iou = tf.where(gt_valid[:, None, :], iou, -1.0)
    best_iou = tf.reduce_max(iou, axis=2)
    best_gt = tf.argmax(iou, axis=2, output_type=tf.int32)
    labels = tf.fill(tf.shape(best_iou), IGNORE)
    labels = tf.where((best_iou >= background_iou_low) & (best_iou < background_iou_high), BACKGROUND, labels)
    labels = tf.where(best_iou >= foreground_iou, FOREGROUND, labels)
    if low_quality:
        # Ties count too (torchvision and Detectron2 do the same): several anchors can share the best IoU.
        best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, G]
        is_best = (iou >= best_per_gt - 1e-6) & (iou > 0.0) & gt_valid[:, None, :]
        labels = tf.where(tf.reduce_any(is_best, axis=2), FOREGROUND, labels)
    has_gt = tf.reduce_any(gt_valid, axis=1, keepdims=True)
    # Without ground truth nothing overlaps: every candidate is background.
    labels = tf.where(has_gt, labels, BACKGROUND)
    return labels, best_gt


def sample_balanced(labels: tf.Tensor, minibatch_size: int,
                    foreground_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Pick up to `minibatch_size` candidates per image, at most `foreground_fraction` of them foreground.

    Returns (indices [B, M], valid [B, M]): M = minibatch_size slots holding the foreground picks first,
    then background picks to fill; slots beyond what exists are invalid (index 0, valid False).
    """
    batch = tf.shape(labels)[0]
    num_candidates = tf.shape(labels)[1]
    k = tf.minimum(minibatch_size, num_candidates)
    noise = tf.random.uniform(tf.shape(labels))
    is_fg = tf.equal(labels, FOREGROUND)
    is_bg = tf.equal(labels, BACKGROUND)
    max_fg = int(minibatch_size * foreground_fraction)
    num_fg = tf.minimum(tf.reduce_sum(tf.cast(is_fg, tf.int32), axis=1), max_fg)  # [B]
    num_bg = tf.minimum(tf.reduce_sum(tf.cast(is_bg, tf.int32), axis=1), minibatch_size - num_fg)
    fg_order = tf.math.top_k(tf.where(is_fg, noise, -1.0), k=k).indices  # random fg first
    bg_order = tf.math.top_k(tf.where(is_bg, noise, -1.0), k=k).indices
    slots = tf.range(minibatch_size)[None, :]  # [1, M]
    fg_slot = slots < num_fg[:, None]
    bg_pos = tf.clip_by_value(slots - num_fg[:, None], 0, k - 1)
    fg_pos = tf.clip_by_value(slots, 0, k - 1)
    fg_pick = tf.gather(fg_order, tf.broadcast_to(fg_pos, [batch, minibatch_size]), batch_dims=1)
    bg_pick = tf.gather(bg_order, bg_pos, batch_dims=1)
    valid = slots < (num_fg + num_bg)[:, None]
    indices = tf.where(fg_slot, fg_pick, bg_pick)
    indices = tf.where(valid, indices, 0)
    return indices, valid


def gather_targets(candidates: tf.Tensor, labels: tf.Tensor, matched_gt: tf.Tensor, gt_boxes: tf.Tensor,
                   indices: tf.Tensor, valid: tf.Tensor, weights: tuple[float, ...]) -> dict[str, tf.Tensor]:
    """For sampled slots: the candidate boxes, their labels (-1 when invalid) and encoded box targets."""
    boxes = tf.gather(candidates, indices, batch_dims=1)  # [B, M, 4]
    slot_labels = tf.gather(labels, indices, batch_dims=1)
    slot_labels = tf.where(valid, slot_labels, IGNORE)
    gt_index = tf.gather(matched_gt, indices, batch_dims=1)
    matched_boxes = tf.gather(gt_boxes, gt_index, batch_dims=1)
    targets = box_ops.encode(matched_boxes, boxes, weights)
    return {"boxes": boxes, "labels": slot_labels, "box_targets": targets, "gt_index": gt_index}
