"""RUN/metrics.json: the results of `detkit eval`, per checkpoint and per evaluated split."""
from __future__ import annotations

import json
import time

from detkit.runs import layout
from detkit.utils import atomic


def map_key(iou_threshold: float) -> str:
    """The name of VOC mAP at an IoU threshold: map50 for 0.5, map75 for 0.75, map62_5 for 0.625."""
    return "map" + format(round(float(iou_threshold) * 100, 6), "g").replace(".", "_")


def map_label(iou_threshold: float) -> str:
    """The display name of VOC mAP at an IoU threshold: mAP@0.5, mAP@0.75."""
    return f"mAP@{float(iou_threshold):g}"


def read_metrics(run_dir: str) -> dict:
    """{checkpoint name: {"step": N, "splits": {label: {...metrics, "evaluated_at": ...}}}}; {} if none."""
    try:
        with open(layout.metrics_path(run_dir), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_metrics(run_dir: str, checkpoint_name: str, step: int, label: str, metrics: dict) -> None:
    """Add one evaluation to RUN/metrics.json (read, update, atomic rewrite)."""
    data = read_metrics(run_dir)
    entry = data.setdefault(checkpoint_name, {"step": step, "splits": {}})
    entry["step"] = step
    entry.setdefault("splits", {})[label] = dict(metrics, evaluated_at=time.time())
    ordered = dict(sorted(data.items(), key=lambda kv: (kv[1].get("step", 0) if isinstance(kv[1], dict) else 0)))
    atomic.write_json(layout.metrics_path(run_dir), ordered)


def forget_metrics(run_dir: str, checkpoint_names: list[str]) -> None:
    """Drop the metrics of deleted checkpoints."""
    data = read_metrics(run_dir)
    if any(name in data for name in checkpoint_names):
        for name in checkpoint_names:
            data.pop(name, None)
        atomic.write_json(layout.metrics_path(run_dir), data)
