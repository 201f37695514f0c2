"""The whole detector learns: a few dozen steps on one raccoon photo."""
import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from detkit.config import load_config
from detkit.models import box_ops
from detkit.models.faster_rcnn import FasterRCNN

TINY = [
    "model.base_network.name=small_resnet", "model.base_network.weights=none",
    "model.base_network.freeze_batchnorm=false", "model.base_network.small_widths=[16,32,32,64]",
    "model.base_network.small_blocks=[0,1,1,1]", "model.rpn.channels=64", "model.rcnn.fc_sizes=[128]",
    "model.anchors.sizes=[32,64,128,256]", "model.rcnn.target.minibatch_size=32",
    "model.rpn.train_proposals.pre_nms_top_n=600", "model.rpn.train_proposals.post_nms_top_n=100",
    "model.rpn.test_proposals.pre_nms_top_n=300", "model.rpn.test_proposals.post_nms_top_n=50",
]


def _raccoon_example(raccoon_dir):
    # The packaged raccoon-1.jpg is 400x257 with one box (50, 54, 321, 251); resized so the longer side is 256.
    image = Image.open(os.path.join(raccoon_dir, "images", "raccoon-1.jpg")).convert("RGB")
    assert image.size == (400, 257)
    scale = 256 / 400
    size = (256, round(257 * scale))
    image = np.asarray(image.resize(size), np.float32)
    box = np.array([50, 54, 321, 251], np.float32) * scale
    return image, box


def test_overfit_one_image(raccoon_dir):
    keras.utils.set_random_seed(0)
    cfg = load_config(overrides=TINY)
    model = FasterRCNN(cfg.model, num_classes=1)
    model.build_for_inference()
    image, box = _raccoon_example(raccoon_dir)
    images = tf.constant(image[None])
    hw = tf.constant([image.shape[:2]], tf.int32)
    gt = tf.constant(box[None, None])
    labels = tf.constant([[1]])
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = model.compute_losses(images, hw, gt, labels, labels > 0)
            # L2 is not a data term: leave it out so "loss halves" measures fitting.
            data_loss = losses["total"] - losses["l2"]
        grads = tape.gradient(data_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return data_loss

    first = float(step())
    for _ in range(80):
        last = float(step())
    assert last < 0.5 * first, (first, last)
    out = model((images, hw), training=False)
    assert int(out["num_detections"][0]) > 0
    top = out["boxes"][0, :1]
    iou = float(box_ops.pairwise_iou(top, gt[0])[0, 0])
    assert iou > 0.5, iou
    assert int(out["labels"][0, 0]) == 1
