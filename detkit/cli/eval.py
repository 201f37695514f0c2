"""`detkit eval`: VOC mAP and COCO metrics of a checkpoint on TFRecord splits, once or watching a run."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import click

from detkit import packing
from detkit.cli.common import config_options, run_overrides, tensorflow
from detkit.cli.predict import checkpoint_source
from detkit.errors import CheckpointError, ConfigError, DatasetError

COCO_KEYS = [
    ("coco_ap", "AP"), ("coco_ap50", "AP50"), ("coco_ap75", "AP75"), ("coco_ap_small", "APs"),
    ("coco_ap_medium", "APm"), ("coco_ap_large", "APl"), ("coco_ar1", "AR1"), ("coco_ar10", "AR10"),
    ("coco_ar100", "AR100"),
]
# Scalars written to TensorBoard (as metrics/NAME) and shown in the table.
SCALAR_KEYS = ["map50", "map50_voc07"] + [k for k, _ in COCO_KEYS]


@dataclass
class Target:
    """One (dataset dir, split) to evaluate on, and the label its results are stored under."""

    dataset_dir: str
    split: str
    label: str


def _log(message: str) -> None:
    click.echo(f"detkit: {message}", err=True)


def _clean(value):
    """JSON-safe copy: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def eval_overrides(config_files: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Overrides for the run's config: the -c files' eval section and dataset.dir (if set), then -o."""
    return run_overrides(config_files, overrides, "eval", keep_dataset_dir=True)


def make_targets(splits: Sequence[str], dataset_dirs: Sequence[str], default_dir: Optional[str],
                 default_split: str) -> list[Target]:
    """Pair --split and --dataset-dir options: equal counts pair up in order, one of either is shared."""
    splits = list(splits) or [default_split]
    dirs = list(dataset_dirs)
    if not dirs:
        if not default_dir:
            raise ConfigError("no dataset to evaluate on: the run config has no dataset.dir; pass --dataset-dir DIR")
        dirs = [default_dir]
    if len(dirs) == 1:
        dirs = dirs * len(splits)
    elif len(splits) == 1:
        splits = splits * len(dirs)
    elif len(dirs) != len(splits):
        raise click.UsageError(
            f"{len(splits)} --split and {len(dirs)} --dataset-dir options: give one of them once, "
            "or both the same number of times (paired in order)"
        )
    default_norm = os.path.normpath(os.path.abspath(default_dir)) if default_dir else None
    targets, labels = [], set()
    for directory, split in zip(dirs, splits):
        same = default_norm is not None and os.path.normpath(os.path.abspath(directory)) == default_norm
        label = split if same else f"{os.path.basename(os.path.normpath(os.path.abspath(directory)))}_{split}"
        base, n = label, 2
        while label in labels:
            label = f"{base}_{n}"
            n += 1
        labels.add(label)
        targets.append(Target(dataset_dir=directory, split=split, label=label))
    return targets


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
    lines.append(f"{'class':<{width}}{'AP@' + format(iou, 'g'):>10}{'AP (VOC07)':>13}{'#gt':>8}")
    for name, values in per_class.items():
        lines.append(f"{name:<{width}}{num(values.get('ap')):>10}{num(values.get('ap_voc07')):>13}"
                     f"{values.get('num_gt', 0):>8}")
    lines.append(f"{'mean':<{width}}{num(result.get('map50')):>10}{num(result.get('map50_voc07')):>13}")
    lines.append("")
    lines.append("COCO  " + "  ".join(f"{short} {num(result.get(key)).strip()}" for key, short in COCO_KEYS))
    return "\n".join(lines)


class Evaluator:
    """Holds one model and restores each checkpoint of a run into it."""

    def __init__(self, source: str, run_overrides: list[str]):
        tensorflow()
        from detkit.detector import Detector

        self.detector = Detector.from_checkpoint(source, run_overrides)
        self.run_dir = self.detector.checkpoint.run_dir
        self.config = self.detector.config
        self.class_names = self.detector.class_names
        self.loaded_prefix = self.detector.checkpoint.prefix
        self._checked: set[str] = set()

    def load(self, prefix: str) -> None:
        if os.path.realpath(prefix) == os.path.realpath(self.loaded_prefix):
            return
        from detkit.train import checkpoints

        checkpoints.restore_model(self.detector.model, prefix)
        self.loaded_prefix = prefix

    def check_classes(self, dataset_dir: str) -> None:
        if dataset_dir in self._checked:
            return
        from detkit.datasets.pipeline import read_class_names

        names = read_class_names(dataset_dir)
        if names != self.class_names:
            raise DatasetError(
                f"{dataset_dir}: its classes {names} differ from the run's classes {self.class_names}; "
                "evaluate on a dataset made with the same class map"
            )
        self._checked.add(dataset_dir)

    def evaluate(self, prefix: str, target: Target, show_progress: bool) -> dict:
        from detkit.eval.runner import evaluate_model

        self.load(prefix)
        self.check_classes(target.dataset_dir)
        return evaluate_model(self.detector.model, self.config, target.dataset_dir, target.split,
                              self.class_names, show_progress=show_progress)


def write_summaries(run_dir: str, label: str, step: int, metrics: dict) -> None:
    """Scalars under RUN/eval_<label>/ at the checkpoint's step: metrics/NAME and metrics/ap/CLASS."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(os.path.join(run_dir, f"eval_{label}"))
    with writer.as_default(step=step):
        for key in SCALAR_KEYS:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                tf.summary.scalar(f"metrics/{key}", value)
        for name, values in (metrics.get("per_class") or {}).items():
            value = values.get("ap")
            if isinstance(value, (int, float)) and math.isfinite(value):
                tf.summary.scalar(f"metrics/ap/{name}", value)
    writer.flush()
    writer.close()


def evaluate_checkpoint(evaluator: Evaluator, entry: packing.CheckpointEntry, targets: list[Target],
                        as_json: bool, show_progress: bool, record: bool) -> list[dict]:
    """Evaluate one checkpoint on every target; print, log to TensorBoard and record in metrics.json."""
    results = []
    for target in targets:
        metrics = _clean(evaluator.evaluate(entry.prefix, target, show_progress))
        result = {"checkpoint": entry.prefix, "step": entry.step, "run_dir": evaluator.run_dir,
                  "dataset_dir": target.dataset_dir, "split": target.split, "label": target.label}
        result.update(metrics)
        if record:
            write_summaries(evaluator.run_dir, target.label, entry.step, metrics)
            try:
                packing.record_metrics(evaluator.run_dir, entry.name, entry.step, target.label,
                                       dict(metrics, dataset_dir=target.dataset_dir, split=target.split))
            except OSError as exc:
                _log(f"warning: cannot record metrics in {evaluator.run_dir} ({exc.strerror or exc})")
        if as_json:
            click.echo(json.dumps(result))
        else:
            click.echo(format_table(result))
            click.echo("")
        sys.stdout.flush()
        results.append(result)
    return results


def _entry_for(source_prefix: str, run_dir: str) -> packing.CheckpointEntry:
    for entry in packing.list_checkpoints(run_dir):
        if os.path.realpath(entry.prefix) == os.path.realpath(source_prefix):
            return entry
    raise CheckpointError(f"{source_prefix}: checkpoint disappeared before it could be evaluated")


def _ready_checkpoints(run_dir: str) -> list[packing.CheckpointEntry]:
    """Complete checkpoints; when the run has a state file, only those it lists (fully written)."""
    entries = packing.list_checkpoints(run_dir)
    state = packing.read_state(os.path.join(run_dir, packing.CHECKPOINT_DIR))
    if state["all"] or state["latest"]:
        listed = set(state["all"]) | {state["latest"]}
        entries = [e for e in entries if e.name in listed]
    return entries


@click.command("eval")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT",
              help="A run directory (its newest checkpoint), a checkpoint RUN/checkpoints/ckpt-N, or a packed "
                   ".tar. Default: the run of -c's train.job_dir/run_name.")
@config_options
@click.option("--split", "splits", multiple=True, metavar="NAME",
              help="Split to evaluate (repeatable; default eval.split).")
@click.option("--dataset-dir", "dataset_dirs", multiple=True, type=click.Path(file_okay=False),
              help="A `detkit dataset transform` output (repeatable, paired with --split; default dataset.dir "
                   "of the run).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint and split on stdout.")
@click.option("--watch", is_flag=True, help="Keep evaluating each new checkpoint of the run until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="With --watch: seconds between looks for a new checkpoint.")
@click.option("--timeout", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="With --watch: stop after this many seconds without a new checkpoint (0 = never).")
@click.option("--no-record", is_flag=True,
              help="Do not write TensorBoard summaries or RUN/metrics.json.")
@click.option("--progress/--no-progress", "show_progress", default=True, help="Progress bar on stderr.")
def evaluate(checkpoint: Optional[str], config_files: tuple[str, ...], overrides: tuple[str, ...],
             splits: tuple[str, ...], dataset_dirs: tuple[str, ...], as_json: bool, watch: bool,
             interval: float, timeout: float, no_record: bool, show_progress: bool) -> None:
    """Evaluate a checkpoint: VOC mAP@0.5 (per class; all-point and VOC07 11-point) and COCO AP/AR.

    Results go to stdout (a table, or JSON with --json), to TensorBoard under RUN/eval_<split>/ at the
    checkpoint's step, and to RUN/metrics.json (shown by `detkit checkpoint list`).
    """
    if not checkpoint and not config_files:
        raise CheckpointError(
            "no checkpoint given: pass --checkpoint RUN_DIR (or RUN_DIR/checkpoints/ckpt-N), or -c config.yml "
            "of a trained run; train one with `detkit train -c config.yml`"
        )
    run_overrides = eval_overrides(config_files, overrides)
    with checkpoint_source(checkpoint, config_files, overrides) as source:
        evaluator = Evaluator(source, run_overrides)
        cfg = evaluator.config
        targets = make_targets(splits, dataset_dirs, cfg.dataset.dir, cfg.eval.split)
        run_dir = evaluator.run_dir
        first = _entry_for(evaluator.loaded_prefix, run_dir)
        evaluate_checkpoint(evaluator, first, targets, as_json, show_progress, not no_record)
        if not watch:
            return
        done = {first.name}
        last_step = first.step
        last_new = time.time()
        _log(f"watching {run_dir} for new checkpoints every {interval:g} s (Ctrl-C to stop)")
        try:
            while True:
                if timeout and time.time() - last_new >= timeout:
                    _log(f"no new checkpoint for {timeout:g} s; stopped watching")
                    return
                time.sleep(min(interval, timeout) if timeout else interval)
                new = [e for e in _ready_checkpoints(run_dir) if e.name not in done and e.step > last_step]
                for entry in new:
                    done.add(entry.name)
                    try:
                        evaluate_checkpoint(evaluator, entry, targets, as_json, show_progress, not no_record)
                    except CheckpointError as exc:  # deleted by the trainer's max_to_keep meanwhile
                        _log(f"warning: skipped {entry.name}: {exc}")
                        continue
                    last_step = max(last_step, entry.step)
                    last_new = time.time()
        except KeyboardInterrupt:
            _log("stopped watching")
