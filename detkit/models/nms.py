"""Per-class NMS with caps per class and per image: TensorFlow's CombinedNonMaxSuppression, or, while a model is
traced for an inference runtime (`portable()`), the same selection from ops every runtime converts."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow as tf

_PORTABLE = contextvars.ContextVar("detkit_portable_nms", default=False)


class NMSResult(NamedTuple):
    """Padded per-image selections, best first (as combined_non_max_suppression's result)."""

    boxes: tf.Tensor    # [B, max_total, 4]
    scores: tf.Tensor   # [B, max_total]
    classes: tf.Tensor  # [B, max_total] float, 0-based
    valid: tf.Tensor    # [B] int32


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """Graphs traced inside use `batched_nms` instead of CombinedNonMaxSuppression (no OpenVINO rule for it)."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def per_class_nms(boxes: tf.Tensor, scores: tf.Tensor, max_per_class: int, max_total: int, iou_threshold: float,
                  score_threshold: float) -> NMSResult:
    """boxes [B, N, C or 1, 4], scores [B, N, C] -> the best boxes per class after NMS within each class,
    at most max_per_class of a class and max_total of an image."""
    if _PORTABLE.get():
        return batched_nms(boxes, scores, max_per_class, max_total, iou_threshold, score_threshold)
    nms = tf.image.combined_non_max_suppression(
        boxes, scores, max_output_size_per_class=max_per_class, max_total_size=max_total,
        iou_threshold=iou_threshold, score_threshold=score_threshold, pad_per_class=False, clip_boxes=False)
    return NMSResult(nms.nmsed_boxes, nms.nmsed_scores, nms.nmsed_classes, nms.valid_detections)


def batched_nms(boxes: tf.Tensor, scores: tf.Tensor, max_per_class: int, max_total: int, iou_threshold: float,
                score_threshold: float) -> NMSResult:
    """per_class_nms as one greedy NMS over all (image, class) groups: the same selections, meant for inference.

    Each group's boxes are moved by group x (their extent + 1) so that no two groups overlap (torchvision's
    batched_nms); the caps are ranks among earlier selections of the same class and image. The rank matrices are
    selections^2: fine for one image, large for a training batch. The shifts grow with groups x extent, so far
    groups compute IoU in coarser float32 steps: a pair within ~1e-4 of the threshold may go either way.
    """
    batch, count = tf.shape(scores)[0], tf.shape(scores)[1]
    classes = scores.shape[2]
    boxes = tf.broadcast_to(boxes, [batch, count, classes, 4])
    group = tf.broadcast_to(tf.range(batch)[:, None, None] * classes + tf.range(classes)[None, None, :],
                            [batch, count, classes])
    flat_boxes = tf.reshape(boxes, [-1, 4])
    flat_scores = tf.reshape(scores, [-1])
    flat_group = tf.reshape(group, [-1])
    low = tf.minimum(tf.reduce_min(flat_boxes), 0.0)  # 0 for clipped boxes: the first group stays where it is
    extent = tf.reduce_max(flat_boxes) - low + 1.0
    shifted = flat_boxes - low + tf.cast(flat_group, tf.float32)[:, None] * extent
    # With one image and no binding per-class cap, the first max_total selections are all that is kept; otherwise
    # any box may be, since a cap can drop earlier selections.
    everything = tf.size(flat_scores)
    budget = everything
    if max_per_class >= max_total:
        budget = tf.where(tf.equal(batch, 1), tf.minimum(everything, max_total), everything)
    # NonMaxSuppressionV5 suppresses at IoU >= its threshold, CombinedNonMaxSuppression only above it.
    above = float(np.nextafter(np.float32(iou_threshold), np.float32(2.0)))
    selected = tf.raw_ops.NonMaxSuppressionV5(
        boxes=shifted, scores=flat_scores, max_output_size=budget, iou_threshold=above,
        score_threshold=float(score_threshold), soft_nms_sigma=0.0, pad_to_max_output_size=False)[0]
    sel_group = tf.gather(flat_group, selected)
    sel_image = sel_group // classes
    order = tf.range(tf.shape(selected)[0])
    earlier = order[None, :] < order[:, None]
    same_class = earlier & tf.equal(sel_group[None, :], sel_group[:, None])
    keep = tf.reduce_sum(tf.cast(same_class, tf.int32), axis=1) < max_per_class
    same_image = earlier & tf.equal(sel_image[None, :], sel_image[:, None]) & keep[None, :]
    rank = tf.reduce_sum(tf.cast(same_image, tf.int32), axis=1)
    keep = keep & (rank < max_total)
    slot = tf.where(keep, rank, max_total)  # one spare slot past the end takes what is not kept
    index = tf.stack([sel_image, slot], axis=1)

    def scatter(values: tf.Tensor, width: int = 0) -> tf.Tensor:
        # (No concatenation with an empty shape for the 2-D case: OpenVINO's TensorFlow frontend crashes on it.)
        shape = tf.stack([batch, max_total + 1, width]) if width else tf.stack([batch, max_total + 1])
        return tf.scatter_nd(index, values, shape)[:, :max_total]

    kept = tf.cast(keep, tf.float32)
    out_boxes = scatter(tf.gather(flat_boxes, selected) * kept[:, None], 4)
    out_scores = scatter(tf.gather(flat_scores, selected) * kept)
    out_classes = scatter(tf.cast(sel_group % classes, tf.float32) * kept)
    # A comparison and a sum rather than a segment sum: tf2onnx's UnsortedSegmentSum fails in ONNX Runtime.
    mine = tf.equal(sel_image[:, None], tf.range(batch)[None, :]) & keep[:, None]
    valid = tf.reduce_sum(tf.cast(mine, tf.int32), axis=0)
    return NMSResult(out_boxes, out_scores, out_classes, valid)
