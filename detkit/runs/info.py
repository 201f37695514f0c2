"""What is in a run, for `detkit checkpoint list/info`: config highlights, classes, checkpoints, sizes, metrics."""
from __future__ import annotations

import datetime
import json
import os

import yaml

from detkit.errors import CheckpointError, DetkitError
from detkit.runs import layout
from detkit.runs.checkpoints import latest_entry, list_checkpoints
from detkit.runs.config import load_run_config
from detkit.runs.metrics import map_key, map_label, read_metrics



def directory_size(path: str) -> int:
    """Bytes of all files below `path`."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def human_size(num_bytes: float) -> str:
    """1.2 MB style."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"  # pragma: no cover


def format_time(timestamp: float) -> str:
    """Local date and time to the minute."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def run_summary(run_dir: str) -> dict:
    """Config highlights and class names of a run, read without TensorFlow; unreadable parts are reported."""
    info: dict = {"run_dir": run_dir}
    try:
        cfg = load_run_config(run_dir)
    except CheckpointError as exc:  # names the file already
        info["config_error"] = str(exc)
        cfg = None
    except (OSError, yaml.YAMLError, DetkitError) as exc:
        info["config_error"] = f"{layout.config_path(run_dir)}: {exc}"
        cfg = None
    try:
        with open(layout.classes_path(run_dir), encoding="utf-8") as fh:
            info["classes"] = json.load(fh)
    except (OSError, ValueError):
        info["classes"] = None
    if cfg is not None:
        m, t = cfg.model, cfg.train
        info["config"] = {
            "backbone": m.base_network.name,
            "weights": m.base_network.weights,
            "rcnn": m.rcnn.enabled,
            "architecture": m.architecture,
            # An fpn model sizes its anchors per pyramid level (model.fpn.anchor_sizes), not with model.anchors.sizes.
            "anchors": {"sizes": m.fpn.anchor_sizes if m.architecture == "fpn" else m.anchors.sizes,
                        "ratios": m.anchors.ratios},
            "image": {"min_size": cfg.dataset.image.min_size, "max_size": cfg.dataset.image.max_size},
            "dataset": {"dir": cfg.dataset.dir, "split": cfg.dataset.split},
            "train": {"num_steps": t.num_steps, "num_epochs": t.num_epochs, "batch_size": t.batch_size,
                      "optimizer": t.optimizer.type, "learning_rate": t.learning_rate.base,
                      "schedule": t.learning_rate.schedule},
            "predict": {"min_prob": cfg.predict.min_prob, "max_detections": cfg.predict.max_detections},
        }
    return info


def checkpoint_rows(run_dir: str) -> list[dict]:
    """One dict per checkpoint of a run: name, prefix, step, date, size, latest flag and eval metrics."""
    latest = latest_entry(run_dir)
    metrics = read_metrics(run_dir)
    rows = []
    for entry in list_checkpoints(run_dir):
        m = metrics.get(entry.name) or {}
        rows.append({
            "name": entry.name, "prefix": entry.prefix, "step": entry.step,
            "date": format_time(entry.mtime), "mtime": entry.mtime, "size": entry.size,
            "latest": latest is not None and entry.name == latest.name,
            "metrics": {label: listed_metrics(v) for label, v in (m.get("splits") or {}).items()
                        if isinstance(v, dict)},
        })
    return rows


def _iou(metrics: dict) -> float:
    iou = metrics.get("iou_threshold", 0.5)
    return float(iou) if isinstance(iou, (int, float)) else 0.5


def listed_metrics(metrics: dict) -> dict:
    """The metrics of one stored evaluation shown beside its checkpoint: VOC mAP at its IoU, COCO AP and AP50."""
    key = map_key(_iou(metrics))
    keys = ("iou_threshold", key, f"{key}_voc07", "coco_ap", "coco_ap50")
    return {k: metrics.get(k, 0.5 if k == "iou_threshold" else None) for k in keys}


def metrics_summary(metrics_by_label: dict) -> str:
    """"test mAP@0.5 0.512, val mAP@0.75 0.301" for the stored evaluations of one checkpoint."""
    parts = []
    for label, metrics in sorted(metrics_by_label.items()):
        value = metrics.get(map_key(_iou(metrics)))
        if isinstance(value, (int, float)):
            parts.append(f"{label} {map_label(_iou(metrics))} {value:.3f}")
    return ", ".join(parts)
