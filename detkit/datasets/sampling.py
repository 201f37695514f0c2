"""Repeat factor sampling (LVIS, Gupta et al. 2019): images of rare classes are seen more often.

r_c = max(1, sqrt(t / f_c)) for each class c, f_c the fraction of training images holding c; an image's factor is
the largest r_c of its classes, and each epoch it is repeated floor(r) times plus once more with probability r - floor(r).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

# Lazy imports: the recipe's rules use class_repeat_factors before TensorFlow may be imported (a worker must
# start its distribution strategy first), so TensorFlow is imported by the functions that build tensors.

if TYPE_CHECKING:  # the rules (detkit/recipe) use class_repeat_factors without importing TensorFlow
    import tensorflow as tf


def class_repeat_factors(image_fraction: Sequence[float], threshold: float) -> np.ndarray:
    """[C] max(1, sqrt(t / f_c)); a class in no image gets 1 (nothing to repeat)."""
    f = np.asarray(image_fraction, np.float64)
    with np.errstate(divide="ignore"):
        r = np.sqrt(threshold / np.where(f > 0, f, np.inf))
    return np.maximum(1.0, r)


def image_repeat_factor(labels: "tf.Tensor", class_factors: "tf.Tensor") -> "tf.Tensor":
    """The largest factor of an image's classes (1-based labels; other labels and no boxes give 1)."""
    import tensorflow as tf

    num = tf.shape(class_factors)[0]
    valid = tf.boolean_mask(labels, (labels >= 1) & (labels <= num)) - 1
    return tf.reduce_max(tf.concat([tf.gather(class_factors, valid), [1.0]], 0))


def repeat_by_factor(ds: "tf.data.Dataset", class_factors: Sequence[float]) -> "tf.data.Dataset":
    """Each parsed record repeated by its image's factor, with stochastic rounding."""
    import tensorflow as tf

    factors = tf.constant(np.asarray(class_factors, np.float32))

    def times(record: dict) -> "tf.data.Dataset":
        r = image_repeat_factor(tf.cast(record["labels"], tf.int32), factors)
        whole = tf.floor(r)
        # Drawn from the global seed (keras.utils.set_random_seed), like the augmentation.
        n = tf.cast(whole, tf.int64) + tf.cast(tf.random.uniform([]) < r - whole, tf.int64)
        return tf.data.Dataset.from_tensors(record).repeat(n)

    return ds.flat_map(times)
