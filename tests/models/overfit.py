"""Shared set-up of the one-image overfit tests: a detector trained on the packaged raccoon-1.jpg."""
import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from detkit.models import box_ops


@dataclass
class Overfit:
    """The data losses of every step, and the top detection after training."""

    losses: list[float]
    top_iou: float
    top_label: int
    num_detections: int

    def first_loss(self) -> float:
        """The loss of the untrained model."""
        return self.losses[0]

    def final_loss(self, last: int = 10) -> float:
        """The median loss of the last steps: a step whose sampled RoIs are new to the classifier can spike."""
        return float(np.median(self.losses[-last:]))


def raccoon_example(raccoon_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """raccoon-1.jpg (400x257, one box (50, 54, 321, 251)) resized so the longer side is 256, and its box."""
    image = Image.open(os.path.join(raccoon_dir, "images", "raccoon-1.jpg")).convert("RGB")
    assert image.size == (400, 257)
    scale = 256 / 400
    image = np.asarray(image.resize((256, round(257 * scale))), np.float32)
    box = np.array([50, 54, 321, 251], np.float32) * scale
    return image, box


def overfit_one_image(model, raccoon_dir: str, steps: int) -> Overfit:
    """Train `model` with Adam(1e-3) on the one raccoon photo (L2 left out: it is not a data term)."""
    image, box = raccoon_example(raccoon_dir)
    images = tf.constant(image[None])
    hw = tf.constant([image.shape[:2]], tf.int32)
    gt = tf.constant(box[None, None])
    labels = tf.constant([[1]])
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = model.compute_losses(images, hw, gt, labels, labels > 0, include_l2=False)["total"]
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(steps)]
    out = model.stages(images, hw)  # the image is already at the network's size
    count = int(out["num_detections"][0])
    iou = float(box_ops.pairwise_iou(out["boxes"][0, :1], gt[0])[0, 0]) if count else 0.0
    return Overfit(losses, iou, int(out["labels"][0, 0]), count)
