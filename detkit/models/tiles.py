"""Tiles: a large photo cut into overlapping squares at its own resolution (SAHI's sliced inference), and the
random tile a training step sees.

Small objects in a large photo vanish when the whole photo is resized to what a CPU can afford; the same
network run on tiles of the photo's own pixels keeps them. The tiles' detections (and, optionally, the whole
photo's, for objects larger than a tile) are mapped to the photo's pixels and merged by per-class NMS.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from detkit.models.nms import per_class_nms


@dataclass(frozen=True)
class Tiling:
    """Tile side (original-image pixels), the fraction of it neighbours share, and whether the whole photo is
    detected too."""

    size: int
    overlap: float = 0.25
    whole_image: bool = True


def tile_starts(length: tf.Tensor, size: int, overlap: float) -> tf.Tensor:
    """Start offsets of the tiles along a side of `length` pixels: every `size * (1 - overlap)` pixels, the last
    one ending at the side (one tile at 0 when the side is not longer than a tile)."""
    length = tf.cast(length, tf.int32)
    step = max(1, int(round(size * (1.0 - overlap))))
    span = tf.maximum(length - size, 0)
    count = (span + step - 1) // step + 1
    return tf.minimum(tf.range(count) * step, span)


def tile_grid(image_hw: tf.Tensor, size: int, overlap: float) -> tf.Tensor:
    """The (y, x) offsets [T, 2] of the tiles covering an image of size image_hw, row by row."""
    ys = tile_starts(image_hw[0], size, overlap)
    xs = tile_starts(image_hw[1], size, overlap)
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
    return tf.reshape(tf.stack([grid_y, grid_x], axis=-1), [-1, 2])


def cut_tiles(image: tf.Tensor, image_hw: tf.Tensor, offsets: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The tiles [T, size, size, C] of one image (zero-padded where the image is smaller) and their sizes [T, 2]."""
    image_hw = tf.cast(image_hw, tf.int32)

    def one(offset: tf.Tensor) -> tf.Tensor:
        tile = image[offset[0]:offset[0] + size, offset[1]:offset[1] + size]
        hw = tf.shape(tile)[:2]
        return tf.pad(tile, [[0, size - hw[0]], [0, size - hw[1]], [0, 0]])

    tiles = tf.map_fn(one, offsets, fn_output_signature=tf.TensorSpec([size, size, image.shape[-1]], image.dtype))
    sizes = tf.minimum(image_hw[None, :] - offsets, size)
    return tiles, sizes


def random_tile(image_hw: tf.Tensor, size: int) -> tf.Tensor:
    """A random (y, x) offset of a training tile inside an image of size image_hw (0 where it is smaller)."""
    span = tf.maximum(tf.cast(image_hw, tf.int32) - size, 0)
    return tf.cast(tf.floor(tf.random.uniform([2]) * tf.cast(span + 1, tf.float32)), tf.int32)


def boxes_in_tile(boxes: tf.Tensor, offset: tf.Tensor, tile_hw: tf.Tensor, min_visible: float) -> tuple[tf.Tensor,
                                                                                                         tf.Tensor]:
    """Pixel boxes [N, 4] in a tile's pixels, clipped to it, and which keep at least `min_visible` of their area."""
    shift = tf.cast(tf.stack([offset[1], offset[0], offset[1], offset[0]]), tf.float32)
    moved = boxes - shift
    hw = tf.cast(tile_hw, tf.float32)
    clipped = tf.stack([tf.clip_by_value(moved[:, 0], 0.0, hw[1]), tf.clip_by_value(moved[:, 1], 0.0, hw[0]),
                        tf.clip_by_value(moved[:, 2], 0.0, hw[1]), tf.clip_by_value(moved[:, 3], 0.0, hw[0])], 1)

    def area(b: tf.Tensor) -> tf.Tensor:
        return tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)

    keep = area(clipped) >= min_visible * tf.maximum(area(moved), 1e-6)
    return clipped, keep & (area(clipped) > 0)


def merge_detections(boxes: tf.Tensor, scores: tf.Tensor, labels: tf.Tensor, num_classes: int, nms_iou: float,
                     max_per_class: int, max_total: int) -> dict[str, tf.Tensor]:
    """Detections of several passes over one image (boxes [M, 4] in its pixels, scores [M], 1-based labels [M];
    padding rows with score 0) merged by per-class NMS -> one image's padded detections, best first."""
    class_scores = tf.one_hot(labels - 1, num_classes, dtype=tf.float32) * scores[:, None]
    nms = per_class_nms(boxes[None, :, None, :], class_scores[None], max_per_class, max_total, nms_iou,
                        score_threshold=1e-6)
    return {"boxes": nms.boxes[0], "scores": nms.scores[0], "labels": tf.cast(nms.classes[0], tf.int32) + 1,
            "num_detections": nms.valid[0]}
