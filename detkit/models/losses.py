"""Loss primitives shared by the RPN and R-CNN losses."""
from __future__ import annotations

import tensorflow as tf


def smooth_l1(diff: tf.Tensor, beta: float) -> tf.Tensor:
    """Elementwise smooth L1 (Huber / beta): 0.5 x^2 / beta below beta, |x| - 0.5 beta above."""
    absdiff = tf.abs(diff)
    if beta <= 0:
        return absdiff
    return tf.where(absdiff < beta, 0.5 * tf.square(absdiff) / beta, absdiff - 0.5 * beta)
