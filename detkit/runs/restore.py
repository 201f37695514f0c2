"""Load a checkpoint's weights into a model (TensorFlow): all of them, or all but the class heads.

Failures are one clear CheckpointError: a damaged checkpoint, a class map that does not match, another model.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

import tensorflow as tf

from detkit.errors import CheckpointError
from detkit.runs import layout

if TYPE_CHECKING:
    from detkit.models.faster_rcnn import FasterRCNN


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
            raise CheckpointError(
                f"{layout.classes_path(layout.run_dir_of(prefix))} lists {counts[0]} class(es) but the checkpoint was trained "
                f"for {counts[1]}: restore the classes.json the run was trained with") from None
        raise CheckpointError(
            f"{prefix}: checkpoint does not match the model built from its config ({first})"
        ) from None


def restore_for_finetuning(model: FasterRCNN, prefix: str, same_classes: bool) -> None:
    """Initialise from another run: everything if the class count matches, else all but the class heads."""
    if same_classes:
        restore_model(model, prefix)
        return
    try:
        tf.train.Checkpoint(model=tf.train.Checkpoint(**model.shared_parts())).restore(prefix).expect_partial()
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"{prefix}: cannot initialise from this checkpoint ({str(exc).splitlines()[0][:200]})") from None
