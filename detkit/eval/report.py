"""How an evaluation is reported: metric names, a JSON-safe copy, the text table, and TensorBoard scalars."""
from __future__ import annotations

import math

import tensorflow as tf

from detkit.eval.metrics import map_key

COCO_KEYS = [
    ("coco_ap", "AP"), ("coco_ap50", "AP50"), ("coco_ap75", "AP75"), ("coco_ap_small", "APs"),
    ("coco_ap_medium", "APm"), ("coco_ap_large", "APl"), ("coco_ar1", "AR1"), ("coco_ar10", "AR10"),
    ("coco_ar100", "AR100"),
]


def scalar_keys(iou_threshold: float) -> list[str]:
    """The metrics written to TensorBoard (as metrics/NAME): VOC mAP at the threshold, then COCO's."""
    key = map_key(iou_threshold)
    return [key, f"{key}_voc07"] + [k for k, _ in COCO_KEYS]


def clean(value):
    """JSON-safe copy: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(result: dict) -> str:
    """A readable report of one evaluation."""
    lines = [
        f"checkpoint {result['checkpoint']} (step {result['step']})",
        f"dataset {result['dataset_dir']} split {result['split']}: {result['num_images']} images, "
        f"{result['num_detections']} detections",
        "",
    ]
    per_class = result.get("per_class") or {}
    width = max([len("class"), len("mean")] + [len(n) for n in per_class]) + 2

    def num(value) -> str:
        # None: no ground truth for a class; -1: COCO's "no objects of this size".
        return "     -" if value is None or value < 0 else f"{value:6.3f}"

    iou = result.get("iou_threshold", 0.5)
    key = map_key(iou)
    lines.append(f"{'class':<{width}}{'AP@' + format(iou, 'g'):>10}{'AP (VOC07)':>13}{'#gt':>8}"
                 f"{'TP':>7}{'FP':>7}{'FN':>7}")
    for name, values in per_class.items():
        lines.append(f"{name:<{width}}{num(values.get('ap')):>10}{num(values.get('ap_voc07')):>13}"
                     f"{values.get('num_gt', 0):>8}{values.get('tp', '-'):>7}{values.get('fp', '-'):>7}"
                     f"{values.get('fn', '-'):>7}")
    lines.append(f"{'mean':<{width}}{num(result.get(key)):>10}{num(result.get(key + '_voc07')):>13}")
    if "threshold" in result:
        lines.append(f"TP/FP/FN at IoU 0.5 and score >= {result['threshold']:.3f} ({result['threshold_rule']})")
    lines.append("")
    lines.append("COCO  " + "  ".join(f"{short} {num(result.get(k)).strip()}" for k, short in COCO_KEYS))
    return "\n".join(lines)


def write_summaries(writer, step: int, metrics: dict) -> None:
    """Scalars in a tf.summary writer at the checkpoint's step: metrics/NAME and metrics/ap/CLASS."""
    with writer.as_default(step=step):
        for key in scalar_keys(metrics.get("iou_threshold", 0.5)):
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                tf.summary.scalar(f"metrics/{key}", value)
        for name, values in (metrics.get("per_class") or {}).items():
            value = values.get("ap")
            if isinstance(value, (int, float)) and math.isfinite(value):
                tf.summary.scalar(f"metrics/ap/{name}", value)
    writer.flush()
