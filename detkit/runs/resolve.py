"""Which run or checkpoint the user means: a run directory, a ckpt-N prefix, a packed .tar, or the -c config's run."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from detkit.errors import CheckpointError
from detkit.runs import layout
from detkit.runs.checkpoints import CheckpointEntry, latest_entry, list_checkpoints, step_of

NO_CHECKPOINT_HELP = (
    "no checkpoint given: pass --checkpoint RUN_DIR (a run of `detkit train`, a ckpt-N prefix or a packed .tar), "
    "or -c config.yml of a trained run; train one with `detkit train -c config.yml`"
)


@dataclass
class RunPath:
    """What a RUN_OR_CKPT argument names: a run, and one of its checkpoints if one was named."""

    run_dir: str
    checkpoint: Optional[CheckpointEntry]  # the named checkpoint; None = the whole run


@dataclass
class ResolvedCheckpoint:
    """A checkpoint prefix to load and the run directory holding its config and class map."""

    run_dir: str
    prefix: str
    step: int


def resolve_run_path(path: str) -> RunPath:
    """A run directory, its checkpoints/ folder, or a checkpoint prefix (ckpt-N, or ckpt-N.index)."""
    norm = os.path.normpath(path)
    if norm.endswith(".index"):
        norm = norm[: -len(".index")]
    if os.path.isdir(norm):
        run_dir = os.path.dirname(norm) if os.path.basename(norm) == layout.CHECKPOINT_DIR else norm
        if not layout.is_run_dir(run_dir) and not os.path.isdir(layout.checkpoint_dir(run_dir)):
            raise CheckpointError(f"{path}: not a run directory (no {layout.CONFIG_FILE} or "
                                  f"{layout.CHECKPOINT_DIR}/ in it)")
        return RunPath(run_dir=run_dir, checkpoint=None)
    if os.path.isfile(norm + ".index"):
        run_dir = layout.run_dir_of(norm)
        for entry in list_checkpoints(run_dir):
            if os.path.normpath(entry.prefix) == norm:
                return RunPath(run_dir=run_dir, checkpoint=entry)
        raise CheckpointError(f"{path}: checkpoint has an index but no data file (incomplete or being written)")
    if os.path.isfile(norm):
        raise CheckpointError(f"{path}: not a run directory, checkpoint or `detkit checkpoint pack` file "
                              "(not a tar archive); expected RUN_DIR, RUN_DIR/checkpoints/ckpt-N or FILE.tar")
    raise CheckpointError(f"{path}: not a run directory or checkpoint (expected RUN_DIR or RUN_DIR/checkpoints/ckpt-N)")


def resolve(path: str) -> ResolvedCheckpoint:
    """Accept a run dir, its checkpoints dir, or a checkpoint prefix; return the checkpoint to load."""
    path = os.path.normpath(path)
    if os.path.isdir(path):
        run_dir = os.path.dirname(path) if os.path.basename(path) == layout.CHECKPOINT_DIR else path
        entry = latest_entry(run_dir)
        if entry is None:
            raise CheckpointError(f"{path}: no checkpoint found (train first with `detkit train -c config.yml`)")
        prefix = entry.prefix
    elif os.path.isfile(path + ".index"):
        prefix = path
        run_dir = layout.run_dir_of(path)
    else:
        raise CheckpointError(f"{path}: not a run directory or checkpoint (expected RUN_DIR or RUN_DIR/checkpoints/ckpt-N)")
    if not layout.is_run_dir(run_dir):
        raise CheckpointError(f"{run_dir}: no {layout.CONFIG_FILE} beside the checkpoint; cannot rebuild the model")
    return ResolvedCheckpoint(run_dir=run_dir, prefix=prefix, step=step_of(prefix))


def find_runs(job_dir: str, max_depth: int = 3) -> list[str]:
    """Run directories at or below `job_dir` (a run inside a run is not searched for), sorted."""
    if not os.path.isdir(job_dir):
        raise CheckpointError(f"{job_dir}: no such directory (the runs are under train.job_dir, default ./jobs)")
    if layout.is_run_dir(job_dir):
        return [job_dir]
    runs = []
    base_depth = os.path.normpath(job_dir).count(os.sep)
    for root, dirs, _ in os.walk(job_dir):
        if root != job_dir and (layout.is_run_dir(root) or os.path.isdir(layout.checkpoint_dir(root))):
            runs.append(root)
            dirs[:] = []
        elif os.path.normpath(root).count(os.sep) - base_depth >= max_depth:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(runs)


def run_from_config(job_dir: str, run_name: str) -> str:
    """train.job_dir/train.run_name; with no run_name, the run under job_dir with the newest checkpoint."""
    if run_name:
        return os.path.join(job_dir, run_name)
    best, best_time = None, -1.0
    if os.path.isdir(job_dir):
        for run in find_runs(job_dir):
            entry = latest_entry(run)
            if entry is not None and entry.mtime > best_time:
                best, best_time = run, entry.mtime
    if best is None:
        raise CheckpointError(
            f"{job_dir}: no trained run found (train.run_name is empty); train one with "
            "`detkit train -c config.yml`, or pass --checkpoint RUN_DIR"
        )
    return best


def check_has_checkpoint(path: str) -> RunPath:
    """resolve_run_path, and fail early with how to get a checkpoint when the run has none yet."""
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise CheckpointError(
            f"{path}: no such run or checkpoint; train one with `detkit train -c config.yml`, "
            "or pass --checkpoint RUN_DIR (or a packed .tar)"
        )
    target = resolve_run_path(path)
    if target.checkpoint is None and latest_entry(target.run_dir) is None:
        raise CheckpointError(
            f"{target.run_dir}: no checkpoint yet; train with `detkit train -c config.yml` "
            "(or pass --checkpoint with a trained RUN_DIR)"
        )
    if not layout.is_run_dir(target.run_dir):
        raise CheckpointError(f"{target.run_dir}: no {layout.CONFIG_FILE} beside the checkpoint; "
                              "cannot rebuild the model")
    return target
