"""Run directories and checkpoints: what is saved, where, and how it is found and restored."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from detkit.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yml"
CLASSES_FILE = "classes.json"


@dataclass
class ResolvedCheckpoint:
    """A checkpoint prefix and the run directory holding its config and class map."""

    run_dir: str
    prefix: str
    step: int


def checkpoint_dir(run_dir: str) -> str:
    """Where a run keeps its checkpoints."""
    return os.path.join(run_dir, CHECKPOINT_DIR)


def is_complete(prefix: str) -> bool:
    """Whether a checkpoint prefix has its .index and at least one .data file."""
    return os.path.isfile(prefix + ".index") and bool(glob.glob(glob.escape(prefix) + ".data-*"))


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint prefix of a run, or None."""
    directory = checkpoint_dir(run_dir)
    if not os.path.isdir(directory):
        return None
    prefix = tf.train.latest_checkpoint(directory)
    if prefix is not None and is_complete(prefix):
        return prefix
    # The state file is missing, unreadable or names a checkpoint whose files are gone: use the files on
    # disk, so that `train` resumes instead of silently starting over beside the run's checkpoints.
    steps = [int(m.group(1)) for m in (re.match(r"^ckpt-(\d+)\.index$", n) for n in os.listdir(directory)) if m]
    complete = [p for p in (os.path.join(directory, f"ckpt-{s}") for s in sorted(steps)) if is_complete(p)]
    return complete[-1] if complete else None


def step_of(prefix: str) -> int:
    """The step number encoded in a checkpoint prefix (ckpt-N)."""
    try:
        return int(prefix.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def resolve(path: str) -> ResolvedCheckpoint:
    """Accept a run dir, its checkpoints dir, or a checkpoint prefix; return the checkpoint to load."""
    path = os.path.normpath(path)
    if os.path.isdir(path):
        run_dir = os.path.dirname(path) if os.path.basename(path) == CHECKPOINT_DIR else path
        prefix = latest_checkpoint(run_dir)
        if prefix is None:
            raise CheckpointError(f"{path}: no checkpoint found (train first with `detkit train -c config.yml`)")
    elif os.path.isfile(path + ".index"):
        prefix = path
        run_dir = os.path.dirname(os.path.dirname(path))
    else:
        raise CheckpointError(f"{path}: not a run directory or checkpoint (expected RUN_DIR or RUN_DIR/checkpoints/ckpt-N)")
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        raise CheckpointError(f"{run_dir}: no {CONFIG_FILE} beside the checkpoint; cannot rebuild the model")
    return ResolvedCheckpoint(run_dir=run_dir, prefix=prefix, step=step_of(prefix))


def is_damaged(exc: BaseException) -> bool:
    """Whether a restore error means the checkpoint files are broken (not merely for another model)."""
    # IndexError: a truncated .data file ("Read less bytes than requested").
    return isinstance(exc, (IndexError, tf.errors.DataLossError, tf.errors.NotFoundError)) or (
        "sstable" in str(exc) or "corrupt" in str(exc).lower())


def class_count_mismatch(model: tf.Module, message: str) -> Optional[tuple[int, int]]:
    """(classes of the model, classes of the checkpoint) when a restore failed on a class-dependent head."""
    head = getattr(model, "rcnn_head", None)
    match = re.search(r"incompatible tensor with shape \((\d+), (\d+)\) when attempting to restore variable "
                      r"with shape \((\d+), (\d+)\)", message)
    if head is None or not match:
        return None
    saved, built = (int(match.group(2)), (int(match.group(3)), int(match.group(4))))
    if built == tuple(head.cls.kernel.shape):
        return built[1] - 1, saved - 1
    if built == tuple(head.box.kernel.shape):
        return built[1] // 4, saved // 4
    return None


def restore_model(model: tf.Module, prefix: str) -> None:
    """Load model weights only (no optimizer) from a checkpoint, failing clearly on a mismatch."""
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if is_damaged(exc):
            raise CheckpointError(
                f"{prefix}: the checkpoint is damaged ({first}); use another one of the run (`detkit checkpoint "
                f"list`), or delete it with `detkit checkpoint delete {prefix} --yes`") from None
        counts = class_count_mismatch(model, str(exc))
        if counts:
            run_dir = os.path.dirname(os.path.dirname(prefix))
            raise CheckpointError(
                f"{os.path.join(run_dir, CLASSES_FILE)} lists {counts[0]} class(es) but the checkpoint was trained "
                f"for {counts[1]}: restore the classes.json the run was trained with") from None
        raise CheckpointError(
            f"{prefix}: checkpoint does not match the model built from its config ({first})"
        ) from None


def restore_for_finetuning(model, prefix: str, same_classes: bool) -> None:
    """Initialise from another run: everything if the class count matches, else all but the class heads."""
    if same_classes:
        restore_model(model, prefix)
        return
    parts = {"backbone": model.backbone, "rpn_head": model.rpn_head}
    if getattr(model, "fpn", None) is not None:
        parts["fpn"] = model.fpn
    if model.rcnn_head is not None:
        head = {f"fc{i + 1}": fc for i, fc in enumerate(model.rcnn_head.fcs)}
        if model.rcnn_head.tail is not None:
            head["tail"] = model.rcnn_head.tail
        if model.rcnn_head.reduce is not None:
            head["reduce"] = model.rcnn_head.reduce
        parts["rcnn_head"] = tf.train.Checkpoint(**head)
    try:
        tf.train.Checkpoint(model=tf.train.Checkpoint(**parts)).restore(prefix).expect_partial()
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"{prefix}: cannot initialise from this checkpoint ({str(exc).splitlines()[0][:200]})") from None
