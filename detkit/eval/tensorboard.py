"""PR curves (TensorBoard's PR-curve plugin) and the confusion-matrix image of an evaluation, in TensorBoard."""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary

from detkit.eval import figures, pr_curves
from detkit.eval.diagnosis import MATCH_IOU, threshold_counts
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import VocResult, voc_average_precision

NUM_THRESHOLDS = 51


def write_curves_and_confusion(writer, step: int, ground_truths: Sequence[GroundTruth],
                               detections: Sequence[Detections], class_names: Sequence[str], prefix: str = "",
                               min_prob: Optional[float] = None, curves: Optional[VocResult] = None) -> None:
    """`PREFIXpr_curve/CLASS` (IoU 0.5) and the image `PREFIXconfusion_matrix` at `step` in `writer`."""
    class_ids = list(range(1, len(class_names) + 1))
    curves = curves or voc_average_precision(ground_truths, detections, class_ids, MATCH_IOU)
    counts = threshold_counts(ground_truths, detections, class_names, min_prob, curves)
    image = tf.io.decode_png(figures.png_bytes(figures.confusion_figure(
        counts["confusion"]["labels"], counts["confusion"]["matrix"], counts["threshold"])), channels=3)
    with writer.as_default(step=step):
        for c, name in zip(class_ids, class_names):
            values = pr_curves.counts_at_thresholds(curves.per_class[c], NUM_THRESHOLDS)
            proto = pr_summary.raw_data_pb(
                f"{prefix}pr_curve/{name}", values["tp"], values["fp"], values["fp"] * 0, values["fn"],
                values["precision"], values["recall"], num_thresholds=NUM_THRESHOLDS,
                description=f"{name}: precision and recall at IoU 0.5 by score threshold")
            tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)
        tf.summary.image(f"{prefix}confusion_matrix", image[None], step=step,
                         description=f"rows: ground truth, columns: detected class; score >= "
                                     f"{counts['threshold']:.2f}, IoU 0.5")
    writer.flush()
