"""TensorBoard summaries: loss scalars and images with ground truth, proposals and detections."""
from __future__ import annotations

import tensorflow as tf

GT_COLOR = [0.0, 1.0, 0.0, 1.0]
PROPOSAL_COLOR = [0.2, 0.6, 1.0, 1.0]
DETECTION_COLOR = [1.0, 0.2, 0.2, 1.0]


def write_scalars(writer: tf.summary.SummaryWriter, step: int, values: dict[str, float], prefix: str = "") -> None:
    """One scalar per entry, under `prefix/`."""
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(f"{prefix}{name}", value)


def _normalised_yx(boxes: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
    """Pixel (x1, y1, x2, y2) -> normalised (y1, x1, y2, x2) for draw_bounding_boxes."""
    h = tf.cast(hw[0], tf.float32)
    w = tf.cast(hw[1], tf.float32)
    return tf.stack([boxes[:, 1] / h, boxes[:, 0] / w, boxes[:, 3] / h, boxes[:, 2] / w], axis=1)


def detection_image(image: tf.Tensor, gt_boxes: tf.Tensor, proposals: tf.Tensor, detections: tf.Tensor) -> tf.Tensor:
    """One [1, H, W, 3] image in [0, 1] with ground truth (green), proposals (blue), detections (red)."""
    hw = tf.shape(image)[:2]
    canvas = image[None] / 255.0
    for boxes, color in ((proposals, PROPOSAL_COLOR), (gt_boxes, GT_COLOR), (detections, DETECTION_COLOR)):
        if boxes.shape[0] == 0:
            continue
        canvas = tf.image.draw_bounding_boxes(canvas, _normalised_yx(boxes, hw)[None], tf.constant([color]))
    return canvas


def write_detection_image(writer: tf.summary.SummaryWriter, step: int, image: tf.Tensor) -> None:
    """Log the drawn image under `detections`."""
    with writer.as_default(step=step):
        tf.summary.image("detections", image, max_outputs=1,
                         description="green: ground truth, blue: top proposals, red: detections")
