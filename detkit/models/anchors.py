"""Anchor generation: every (size, ratio) pair at every feature-map point of every level.

One generator with two placements: "centered" (Luminoth, Detectron2's offset 0.5: cell (i, j) of a level of
nominal stride s is centred at ((j + 0.5) s, (i + 0.5) s) and the cell anchors keep their exact sizes) and
"torchvision" (torchvision's AnchorGenerator: cell anchors rounded to whole pixels, placed on cell corners
(j s_x, i s_y) with the stride the padded image size // the level's size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf


def base_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """The K = len(sizes) * len(ratios) anchors centred on (0, 0), ordered ratio-major as (x1, y1, x2, y2).

    `size` is the square root of the area and `ratio` is height / width, so every ratio of one
    size covers the same area.
    """
    out = []
    for ratio in ratios:
        for size in sizes:
            w = size / np.sqrt(ratio)
            h = size * np.sqrt(ratio)
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(out, dtype=np.float32)


def num_anchors_per_location(sizes: Sequence[float], ratios: Sequence[float]) -> int:
    """K: how many anchors sit at each feature-map point."""
    return len(sizes) * len(ratios)


def rounded_base_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """torchvision's AnchorGenerator cell anchors: round([-w, -h, w, h] / 2), ratio-major, computed in float32."""
    sizes32 = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(ratios, np.float32))
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * sizes32[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes32[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0)).astype(np.float32)


def level_stride(padded_hw: tf.Tensor, feature_hw: tf.Tensor) -> tf.Tensor:
    """(stride_y, stride_x) of one pyramid level: the padded image size // the feature size, as torchvision."""
    return tf.math.floordiv(tf.cast(padded_hw, tf.int32), tf.cast(feature_hw, tf.int32))


def grid_anchors(feature_hw: tf.Tensor, stride_hw: tf.Tensor, cell_anchors: np.ndarray, offset: float) -> tf.Tensor:
    """All anchors [H * W * K, 4] of one level: the K cell anchors shifted to each cell ((i + offset) * stride),
    row-major then per cell, the order of a [B, H, W, K] head output reshaped to [B, H * W * K]."""
    base = tf.constant(cell_anchors, tf.float32)
    feature_hw = tf.cast(feature_hw, tf.int32)
    stride = tf.cast(stride_hw, tf.float32)
    ys = (tf.cast(tf.range(feature_hw[0]), tf.float32) + offset) * stride[0]
    xs = (tf.cast(tf.range(feature_hw[1]), tf.float32) + offset) * stride[1]
    cy, cx = tf.meshgrid(ys, xs, indexing="ij")
    shifts = tf.reshape(tf.stack([cx, cy, cx, cy], axis=-1), [-1, 1, 4])
    return tf.reshape(shifts + base[None, :, :], [-1, 4])


PLACEMENTS = ("centered", "torchvision")


@dataclass(frozen=True)
class AnchorGenerator:
    """Anchor sizes per level (finest first), the ratios every level shares, and the placement (see above).

    `strides` are the levels' nominal strides, used by the "centered" placement.
    """

    sizes: tuple[tuple[float, ...], ...]
    ratios: tuple[float, ...]
    strides: tuple[int, ...]
    placement: str = "centered"

    @property
    def num_per_location(self) -> int:
        """K: the anchors at every cell, the same on every level (the RPN head is shared)."""
        return num_anchors_per_location(self.sizes[0], self.ratios)

    def cell_anchors(self, level: int) -> np.ndarray:
        """The K anchors of one cell of `level`, centred on (0, 0)."""
        if self.placement == "torchvision":
            return rounded_base_anchors(self.sizes[level], self.ratios)
        return base_anchors(self.sizes[level], self.ratios)

    def __call__(self, feature_hws: Sequence[tf.Tensor], padded_hw: tf.Tensor) -> list[tf.Tensor]:
        """Anchors [N_l, 4] of each level of sizes feature_hws, for a batch padded to padded_hw."""
        out = []
        for level, feature_hw in enumerate(feature_hws):
            if self.placement == "torchvision":
                stride, offset = level_stride(padded_hw, feature_hw), 0.0
            else:
                stride, offset = tf.constant([self.strides[level]] * 2), 0.5
            out.append(grid_anchors(feature_hw, stride, self.cell_anchors(level), offset))
        return out
