"""TensorBoard summaries: loss scalars and images with ground truth, proposals and detections."""
from __future__ import annotations

import glob
import os

import tensorflow as tf

from detkit.utils import atomic

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


def drop_steps_after(log_dir: str, step: int) -> list[str]:
    """Remove events past `step` from the event files of `log_dir` (each rewritten atomically); the files changed.

    A run killed after its last checkpoint logged steps it will log again once resumed from that checkpoint:
    without this, TensorBoard would show those steps twice.
    """
    changed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(log_dir), "events.out.tfevents.*"))):
        try:
            records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
        except tf.errors.DataLossError:
            # A kill can leave the last record half-written: keep the whole ones.
            records = _whole_records(path)
        kept = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
        if len(kept) == len(records) and os.path.getsize(path) == _size_of(records):
            continue
        with atomic.atomic_path(path) as tmp:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in kept:
                    writer.write(record)
        changed.append(path)
    return changed


def _whole_records(path: str) -> list[bytes]:
    """The records of a TFRecord file up to the first damaged one."""
    out = []
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            out.append(next(iterator).numpy())
        except (StopIteration, tf.errors.DataLossError, tf.errors.OutOfRangeError):
            return out


def _size_of(records: list[bytes]) -> int:
    """Bytes of a TFRecord file holding `records` (8 length + 4 CRC + data + 4 CRC each)."""
    return sum(16 + len(r) for r in records)
