"""Evaluate the checkpoints of a run on TFRecord splits: once, or watching the run for new checkpoints.

Each result goes to the caller (`on_result`), to TensorBoard under RUN/eval_<label>/ at the checkpoint's step,
and to RUN/metrics.json (shown by `detkit checkpoint list`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from detkit import runs
from detkit.datasets.pipeline import read_class_names
from detkit.errors import CheckpointError, ConfigError, DatasetError
from detkit.eval.class_map import label_map
from detkit.eval.metrics import evaluate
from detkit.eval.report import clean, write_summaries
from detkit.eval.report_page import write_report
from detkit.eval.runner import collect
from detkit.eval.tensorboard import write_curves_and_confusion
from detkit.inference import Detector
from detkit.runs import CheckpointEntry, layout
from detkit.runs.restore import restore_model


@dataclass
class Target:
    """One (dataset dir, split) to evaluate on, and the label its results are stored under."""
    dataset_dir: str
    split: str
    label: str


def make_targets(splits: Sequence[str], dataset_dirs: Sequence[str], default_dir: Optional[str],
                 default_split: str) -> list[Target]:
    """Pair splits and dataset dirs: equal counts pair up in order, one of either is shared."""
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
        raise ConfigError(f"{len(splits)} splits and {len(dirs)} dataset dirs: give one of them once, "
                          "or both the same number of times (paired in order)")
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


def report_directory(report_dir: str, targets: Sequence[Target], target: Target) -> str:
    """Where `--report DIR` puts the report of `target`: DIR itself, or DIR/LABEL when there are several."""
    return report_dir if len(targets) == 1 else os.path.join(report_dir, target.label)


class Evaluator:
    """Holds one model and restores each checkpoint of a run into it."""
    def __init__(self, source: str, run_overrides: Iterable[str] = ()):
        self.detector = Detector.from_checkpoint(source, run_overrides)
        self.run_dir = self.detector.checkpoint.run_dir
        self.config = self.detector.config
        self.class_names = self.detector.class_names
        self.loaded_prefix = self.detector.checkpoint.prefix
        self._label_maps: dict[str, tuple[list[str], Optional[np.ndarray]]] = {}

    @property
    def exported(self) -> bool:
        """Whether the model is an export for another runtime (one model, nothing recorded in its directory)."""
        return self.detector.model is None

    def check_watchable(self) -> None:
        """A ConfigError for --watch on an exported model (before any evaluation runs)."""
        if self.exported:
            raise ConfigError(f"--watch: {self.run_dir} is an exported model, which gets no new checkpoints")

    def first_entry(self) -> CheckpointEntry:
        """The checkpoint loaded at construction."""
        if self.exported:
            return CheckpointEntry(prefix=self.loaded_prefix, step=self.detector.checkpoint.step,
                                   mtime=os.path.getmtime(self.loaded_prefix), size=0)
        entry = runs.checkpoints.entry_for(self.loaded_prefix)
        if entry is None:
            raise CheckpointError(f"{self.loaded_prefix}: checkpoint disappeared before it could be evaluated")
        return entry

    def load(self, prefix: str) -> None:
        """Restore `prefix` into the model unless it is the one loaded."""
        if os.path.realpath(prefix) == os.path.realpath(self.loaded_prefix):
            return

        restore_model(self.detector.model, prefix)
        self.loaded_prefix = prefix

    def check_classes(self, dataset_dir: str,
                      log: Callable[[str], None] = lambda message: None) -> tuple[list[str], Optional[np.ndarray]]:
        """The dataset's class names and the run's label -> dataset label map (None: the same classes).

        DatasetError when the dataset has a class the run does not detect.
        """
        if dataset_dir in self._label_maps:
            return self._label_maps[dataset_dir]

        names = read_class_names(dataset_dir)
        try:
            mapping = label_map(self.class_names, names)
        except ValueError as exc:
            raise DatasetError(f"{dataset_dir}: its classes differ from the run's classes ({exc}); evaluate on a "
                               "dataset whose classes the run detects") from None
        if mapping is not None:
            log(f"{dataset_dir}: matching its {len(names)} classes to the run's by name; detections of the run's "
                f"other {int((mapping[1:] == 0).sum())} label slots are not scored")
        self._label_maps[dataset_dir] = (names, mapping)
        return names, mapping

    def collect(self, prefix: str, target: Target, show_progress: bool = True,
                log: Callable[[str], None] = lambda message: None) -> tuple[list[str], list, list]:
        """The dataset's class names, ground truth and detections of one checkpoint on one target."""
        self.load(prefix)
        names, mapping = self.check_classes(target.dataset_dir, log)
        gts, dets = collect(self.detector, self.config, target.dataset_dir, target.split, show_progress,
                            label_map=mapping)
        return names, gts, dets

    def evaluate(self, prefix: str, target: Target, show_progress: bool = True,
                 log: Callable[[str], None] = lambda message: None, min_prob: Optional[float] = None) -> dict:
        """The metrics of one checkpoint on one target (classes matched by name when the dataset's differ)."""
        names, gts, dets = self.collect(prefix, target, show_progress, log)
        return evaluate(gts, dets, names, self.config.eval.iou_threshold, min_prob)

    def evaluate_checkpoint(self, entry: CheckpointEntry, targets: list[Target], on_result: Callable[[dict], None],
                            show_progress: bool = True, record: bool = True,
                            log: Callable[[str], None] = lambda message: None, min_prob: Optional[float] = None,
                            report_dir: Optional[str] = None) -> list[dict]:
        """Evaluate one checkpoint on every target; record to TensorBoard and metrics.json if asked, and write
        a report to `report_dir` (to report_dir/LABEL with several targets) if given."""
        results = []
        for target in targets:
            names, gts, dets = self.collect(entry.prefix, target, show_progress, log)
            metrics = clean(evaluate(gts, dets, names, self.config.eval.iou_threshold, min_prob))
            result = {"checkpoint": entry.prefix, "step": entry.step, "run_dir": self.run_dir,
                      "dataset_dir": target.dataset_dir, "split": target.split, "label": target.label}
            result.update(metrics)
            if record and not self.exported:
                self._record(entry, target, metrics, names, gts, dets, min_prob, log)
            if report_dir:

                directory = report_directory(report_dir, targets, target)
                write_report(directory, gts, dets, names, result, target.dataset_dir, target.split,
                             self.config.dataset.num_parallel_calls, min_prob)
                log(f"report of {entry.name} on {target.label}: {os.path.join(directory, 'report.html')}")
            on_result(result)
            results.append(result)
        return results

    def _record(self, entry: CheckpointEntry, target: Target, metrics: dict, names: list[str], gts: list, dets: list,
                min_prob: Optional[float], log: Callable[[str], None]) -> None:
        """TensorBoard scalars, PR curves and confusion matrix under RUN/eval_LABEL/, and RUN/metrics.json."""
        writer = tf.summary.create_file_writer(layout.eval_log_dir(self.run_dir, target.label))
        try:
            write_summaries(writer, entry.step, metrics)
            write_curves_and_confusion(writer, entry.step, gts, dets, names, min_prob=min_prob)
        finally:
            writer.close()
        # The confusion matrix is in TensorBoard and the report; metrics.json keeps one line of numbers per class.
        kept = {k: v for k, v in metrics.items() if k != "confusion"}
        try:
            runs.record_metrics(self.run_dir, entry.name, entry.step, target.label,
                                dict(kept, dataset_dir=target.dataset_dir, split=target.split))
        except OSError as exc:
            log(f"warning: cannot record metrics in {self.run_dir} ({exc.strerror or exc})")

    def watch(self, first: CheckpointEntry, targets: list[Target], on_result: Callable[[dict], None],
              interval: float, timeout: float = 0.0, show_progress: bool = True, record: bool = True,
              log: Callable[[str], None] = lambda message: None, min_prob: Optional[float] = None,
              report_dir: Optional[str] = None) -> None:
        """Evaluate each new checkpoint of the run after `first` until Ctrl-C or `timeout` s without one."""
        self.check_watchable()
        done = {first.name}
        last_step = first.step
        last_new = time.time()
        log(f"watching {self.run_dir} for new checkpoints every {interval:g} s (Ctrl-C to stop)")
        try:
            while True:
                if timeout and time.time() - last_new >= timeout:
                    log(f"no new checkpoint for {timeout:g} s; stopped watching")
                    return
                time.sleep(min(interval, timeout) if timeout else interval)
                new = [e for e in runs.ready_checkpoints(self.run_dir) if e.name not in done and e.step > last_step]
                for entry in new:
                    done.add(entry.name)
                    try:
                        self.evaluate_checkpoint(entry, targets, on_result, show_progress, record, log, min_prob,
                                                 report_dir)
                    except CheckpointError as exc:  # deleted by the trainer's max_to_keep meanwhile
                        log(f"warning: skipped {entry.name}: {exc}")
                        continue
                    last_step = max(last_step, entry.step)
                    last_new = time.time()
        except KeyboardInterrupt:
            log("stopped watching")
