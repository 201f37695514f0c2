"""Which run directory a training writes to (named, or the newest unfinished run of the same config) and whether
it can resume there."""
from __future__ import annotations

import datetime
import json
import os
import re
from typing import Callable, Optional

import tensorflow as tf

from detkit import runs
from detkit.config import Config, dump_yaml, to_dict
from detkit.errors import CheckpointError, DetkitError, first_line
from detkit.runs import layout
from detkit.runs.lock import holder_alive, read_holder

GENERATED_RUN_NAME = re.compile(r"^run-\d{8}-\d{6}$")


def run_dir_for(cfg: Config, total_steps: int, log: Callable[[str], None]) -> str:
    """job_dir/run_name; without a run name, the newest unfinished run of this same config, else a new name."""
    if cfg.train.run_name:
        return os.path.join(cfg.train.job_dir, cfg.train.run_name)
    unfinished = _newest_unfinished_run(cfg, total_steps)
    if unfinished:
        log(f"resuming {unfinished}: the newest unfinished run of this config (train.run_name is empty; "
            "set it to start another run)")
        return unfinished
    return os.path.join(cfg.train.job_dir, datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S"))


def _newest_unfinished_run(cfg: Config, total_steps: int) -> Optional[str]:
    """The newest run-YYYYmmdd-HHMMSS of job_dir saved with this exact config, not finished and not running."""
    try:
        names = sorted((n for n in os.listdir(cfg.train.job_dir) if GENERATED_RUN_NAME.match(n)), reverse=True)
    except OSError:
        return None
    wanted = dump_yaml(cfg)
    for name in names:
        run_dir = os.path.join(cfg.train.job_dir, name)
        try:
            with open(layout.config_path(run_dir), encoding="utf-8") as fh:
                if fh.read() != wanted:
                    continue
        except OSError:
            continue
        holder = read_holder(run_dir)
        if holder is not None and holder_alive(holder):
            continue  # being trained right now
        if not _finished(run_dir, cfg, total_steps):
            return run_dir
    return None


def _finished(run_dir: str, cfg: Config, total_steps: int) -> bool:
    """Whether a run's newest checkpoint reached its step count or its time budget."""
    latest = runs.latest_checkpoint(run_dir)
    if latest is None:
        return False
    if runs.step_of(latest) >= total_steps:
        return True
    if cfg.train.max_minutes:
        try:
            seconds = float(tf.train.load_checkpoint(latest).get_tensor("elapsed/.ATTRIBUTES/VARIABLE_VALUE"))
        except (tf.errors.OpError, ValueError):
            return False
        return seconds >= cfg.train.max_minutes * 60.0
    return False


def check_resumable(run_dir: str, cfg: Config, class_names: list[str]) -> None:
    """Refuse to resume a run whose model or classes differ from the current config."""
    try:
        saved = runs.load_run_config(run_dir)
    except DetkitError as exc:
        raise CheckpointError(f"{layout.config_path(run_dir)}: cannot read the saved config of this run "
                              f"({first_line(exc, 300)})") from None
    old, new = to_dict(saved.model), to_dict(cfg.model)
    for key in _diff_keys(old, new, "model"):
        raise CheckpointError(
            f"{run_dir}: cannot resume: {key} changed since the checkpoint was written "
            "(use a new train.run_name, or train.init_from to start from it)"
        )
    classes_path = layout.classes_path(run_dir)
    if os.path.isfile(classes_path):
        try:
            with open(classes_path, encoding="utf-8") as fh:
                saved_classes = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{classes_path}: cannot read the class map of this run ({exc})") from None
        if saved_classes != class_names:
            raise CheckpointError(f"{run_dir}: cannot resume: the dataset's classes differ from the run's classes.json")


def _diff_keys(old, new, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff_keys(old.get(key), new.get(key), f"{prefix}.{key}")
        return out
    return [] if old == new else [prefix]
