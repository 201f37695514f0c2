"""The detector's input transform: images to the network's size and pixel scale, and boxes back to the image's own.

Part of the model (as torchvision's GeneralizedRCNNTransform is), so that training, evaluation, `Detector`, the
export and the server scale images and boxes one way: the shorter side to `min_size` unless the longer one would
pass `max_size`, bilinear; normalised as the body's weights expect; zero-padded to a multiple of
`size_divisible`; detections mapped back to original-image pixels. Training images are resized by the tf.data
pipeline with the same `target_hw` (with its random scale), where it runs in parallel with the training step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np
import tensorflow as tf

# Pixel normalisations, by the name a body gives for the weights it was made for.
NORMALIZATIONS = ("tf", "caffe", "imagenet")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision's ImageNet statistics, on 0-1 pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_scale(height: tf.Tensor, width: tf.Tensor, min_size: int, max_size: int) -> tf.Tensor:
    """Scale that brings the shorter side to min_size unless the longer side would pass max_size."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    return tf.minimum(min_size / tf.minimum(h, w), max_size / tf.maximum(h, w))


# Reference sides (the side whose target sets the scale) up to this many pixels get torchvision's float64
# sizes exactly by floor_hw's integer arithmetic; above it, the exact quotient's floor, a pixel more than
# float64 gives for some of the sizes whose product divides evenly.
FLOOR_EXACT_SIDES = 8192


@functools.lru_cache(maxsize=16)
def float64_shortfall(size: int, sides: int = FLOOR_EXACT_SIDES) -> tuple[np.ndarray, np.ndarray]:
    """For each reference side d in 1..sides, (numerator, denominator) of (size - fl64(size / d) * d) * 2**53
    where float64's quotient falls short of size / d, else (0, 1); index 0 is (0, 1)."""
    numerators, denominators = np.zeros(sides + 1, np.int32), np.ones(sides + 1, np.int32)
    for d in range(1, sides + 1):
        short = (Fraction(size) - Fraction(size / d) * d) * 2 ** 53
        if short > 0:
            numerators[d], denominators[d] = short.numerator, short.denominator
    return numerators, denominators


def floor_hw(hw: tf.Tensor, min_size: int, max_size: int) -> tf.Tensor:
    """torchvision's sizes [..., 2] for images of sizes hw [..., 2], floor(side * min(min_size / short,
    max_size / long)) computed as Python does in float64, by int32 arithmetic alone.

    OpenVINO's CPU plugin runs float64 as float32, which moved about one size in eleven by a pixel. With n / d
    the scale, side * n / d is either not a whole number, and then float64's two roundings cannot cross one (they
    move it by less than side * n * 2**-52, far below 1 / d), or a whole number k that float64 gives as k or just
    under it: under it when fl64(n / d) falls short of n / d, relative to it, by more than float64's half step
    just under k, relative to k. float64_shortfall tabulates the shortfall per d; the comparison is of integers
    (a tie keeps k, whose significand is the even one).
    """
    hw = tf.cast(hw, tf.int32)
    short = tf.reduce_min(hw, axis=-1, keepdims=True)
    long = tf.reduce_max(hw, axis=-1, keepdims=True)
    by_short = min_size * long <= max_size * short  # the rationals' order is the rounded quotients' order
    n = tf.where(by_short, min_size, max_size)
    d = tf.where(by_short, short, long)
    row = tf.where(d <= FLOOR_EXACT_SIDES, d, 0)
    by_min, by_max = float64_shortfall(min_size), float64_shortfall(max_size)
    numerator = tf.where(by_short, tf.gather(by_min[0], row), tf.gather(by_max[0], row))
    denominator = tf.where(by_short, tf.gather(by_min[1], row), tf.gather(by_max[1], row))
    product = hw * n
    k = product // d
    powers = tf.constant([2 ** i for i in range(31)], tf.int32)
    below = tf.reduce_max(tf.where(k[..., None] >= powers, powers, 0), axis=-1)  # the largest power of 2 <= k
    half_step = tf.where(below == k, k // 2, below)  # float64's half step just under k, times 2**53
    down = (product == k * d) & (numerator * k > half_step * n * denominator)
    return tf.maximum(k - tf.cast(down, tf.int32), 1)


def input_hw(hw: tf.Tensor, min_size: int, max_size: int, rounding: str = "round",
             factor: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The (height, width) the network sees for an image of size hw (times `factor`), at least 1 pixel.

    "round" is detkit's float32 rounding; "floor" is torchvision's: scale and size in float64 (Python floats
    there), then truncated, as F.interpolate(scale_factor=..., recompute_scale_factor=True) does (floor_hw
    when there is no factor, so that a runtime without float64 gets the same sizes).
    """
    if rounding == "floor" and factor is None:
        return floor_hw(hw, min_size, max_size)
    if rounding == "floor":
        sides = tf.cast(hw, tf.float64)
        scale = tf.minimum(min_size / tf.reduce_min(sides), max_size / tf.reduce_max(sides))
        if factor is not None:
            scale *= tf.cast(factor, tf.float64)
        return tf.maximum(tf.cast(tf.floor(sides * scale), tf.int32), 1)
    scale = resize_scale(hw[0], hw[1], min_size, max_size)
    if factor is not None:
        scale *= factor
    return tf.maximum(tf.cast(tf.round(tf.cast(hw, tf.float32) * scale), tf.int32), 1)


def box_scale(resized_hw: tf.Tensor, original_hw: tf.Tensor) -> tf.Tensor:
    """[..., 4] factors (sx, sy, sx, sy) that map (xmin, ymin, xmax, ymax) from resized to original pixels."""
    ratio = tf.cast(original_hw, tf.float32) / tf.cast(resized_hw, tf.float32)
    return tf.stack([ratio[..., 1], ratio[..., 0], ratio[..., 1], ratio[..., 0]], axis=-1)


def normalize(images: tf.Tensor, normalization: str) -> tf.Tensor:
    """0-255 RGB pixels as the body's weights expect them: [-1, 1] ("tf"), BGR minus the ImageNet mean ("caffe"),
    or torchvision's (x / 255 - mean) / std ("imagenet")."""
    images = tf.cast(images, tf.float32)
    if normalization == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, tf.float32)
    if normalization == "imagenet":
        return (images / 255.0 - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)
    return images / 127.5 - 1.0


def mask_and_pad(images: tf.Tensor, image_hw: Optional[tf.Tensor], divisible: int,
                 batch_hw: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Zero every pixel outside each image's (height, width) and pad bottom/right to a multiple of `divisible`.

    torchvision normalises each image and then pads the batch with zeros; a batch padded before
    normalisation is brought to the same values here. `image_hw` None: every image fills the batch, nothing
    to zero. `batch_hw`, the batch's (height, width) when an earlier tensor has it, spares OpenVINO's int8 a
    second normalisation computed only for its shape.
    """
    hw = tf.shape(images)[1:3] if batch_hw is None else batch_hw
    if image_hw is not None:
        rows = tf.range(hw[0])[None, :, None] < tf.cast(image_hw[:, 0:1, None], tf.int32)
        cols = tf.range(hw[1])[None, None, :] < tf.cast(image_hw[:, 1:2, None], tf.int32)
        images = images * tf.cast((rows & cols)[..., None], images.dtype)
    if divisible <= 1:
        return images
    # Not (-hw) % divisible: tf2onnx lowers the floor modulo of a negative number to a C remainder.
    pad = (divisible - hw % divisible) % divisible
    return tf.pad(images, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])


@dataclass(frozen=True)
class InputTransform:
    """Resize, normalise, pad; and the way back for boxes. Numbers only: it owns no weights."""

    min_size: int
    max_size: int
    rounding: str = "round"
    normalization: str = "tf"
    size_divisible: int = 1

    def target_hw(self, hw: tf.Tensor, factor: Optional[tf.Tensor] = None) -> tf.Tensor:
        """The network's (height, width) for an image of size hw (times a random `factor` in training)."""
        return input_hw(hw, self.min_size, self.max_size, self.rounding, factor)

    def resize(self, image: tf.Tensor, factor: Optional[tf.Tensor] = None) -> tuple[tf.Tensor, tf.Tensor]:
        """One image [H, W, 3] at the network's size as float32, and that size."""
        new_hw = self.target_hw(tf.shape(image)[:2], factor)
        return tf.image.resize(tf.cast(image, tf.float32), new_hw, method="bilinear", antialias=False), new_hw

    @staticmethod
    def resizes_whole(images: tf.Tensor) -> bool:
        """Whether resize_batch gives these images unpadded, each filling the tensor (a batch of one)."""
        return images.shape[0] == 1

    def resize_batch(self, images: tf.Tensor, image_hw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A zero-padded batch of original images [B, H, W, 3] with their sizes [B, 2] -> the resized images,
        zero-padded to the largest, and their sizes."""
        image_hw = tf.cast(image_hw, tf.int32)
        sizes = tf.map_fn(self.target_hw, image_hw)
        if self.resizes_whole(images):
            # One image (a Detector's call, an export's graph): the resize outside the loop, which OpenVINO runs
            # op by op (4.6 of 11 ms of a small model). The sizes stay in it: OpenVINO's TensorFlow frontend has
            # computed them wrong outside a loop (423x660 for 320x498), and out of it they gained 2% at most.
            # Four dimensions throughout: OpenVINO copies a tensor to add or drop one.
            hw = image_hw[0]
            resized = tf.image.resize(tf.cast(images[:, :hw[0], :hw[1]], tf.float32), sizes[0], method="bilinear",
                                      antialias=False)
            return resized, sizes
        padded_hw = tf.reduce_max(sizes, axis=0)

        def one(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
            image, hw, new_hw = args
            resized = tf.image.resize(tf.cast(image[:hw[0], :hw[1]], tf.float32), new_hw, method="bilinear",
                                      antialias=False)
            return tf.pad(resized, [[0, padded_hw[0] - new_hw[0]], [0, padded_hw[1] - new_hw[1]], [0, 0]])

        resized = tf.map_fn(one, (images, image_hw, sizes),
                            fn_output_signature=tf.TensorSpec([None, None, images.shape[-1]], tf.float32))
        return resized, sizes

    def batch(self, images: tf.Tensor, image_hw: tf.Tensor, whole: bool = False) -> tf.Tensor:
        """Resized 0-255 images [B, H, W, 3] of sizes image_hw -> the network's input: normalised, zero outside
        each image (unless `whole`: each fills the tensor), padded to a multiple of size_divisible."""
        return mask_and_pad(normalize(images, self.normalization), None if whole else image_hw,
                            self.size_divisible, tf.shape(images)[1:3])

    @staticmethod
    def boxes_to_original(boxes: tf.Tensor, resized_hw: tf.Tensor, original_hw: tf.Tensor) -> tf.Tensor:
        """Boxes [B, N, 4] in pixels of the resized images [B, 2], in pixels of the originals [B, 2]."""
        return tf.cast(boxes, tf.float32) * box_scale(resized_hw, original_hw)[:, None, :]
