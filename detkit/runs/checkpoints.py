"""The checkpoints of a run: list them, find the latest, read and write TensorFlow's state file, delete one.

No TensorFlow here: the state file (`checkpoints/checkpoint`) is a small text protobuf parsed directly.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Optional

from detkit.errors import CheckpointError
from detkit.runs import layout
from detkit.runs.lock import check_not_training
from detkit.runs.metrics import forget_metrics
from detkit.utils import atomic

_CKPT_RE = re.compile(r"^(?P<name>.+-(?P<step>\d+))\.index$")


@dataclass
class CheckpointEntry:
    """One complete checkpoint on disk."""

    prefix: str
    step: int
    mtime: float
    size: int
    files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """ckpt-N."""
        return os.path.basename(self.prefix)


def checkpoint_files(prefix: str) -> list[str]:
    """The .index and .data-* files of a checkpoint prefix."""
    files = [prefix + ".index"] if os.path.isfile(prefix + ".index") else []
    return files + sorted(glob.glob(glob.escape(prefix) + ".data-*"))


def step_of(prefix: str) -> int:
    """The step number of a ckpt-N prefix (0 if there is none)."""
    match = re.search(r"-(\d+)$", os.path.basename(prefix))
    return int(match.group(1)) if match else 0


def list_checkpoints(run_dir: str) -> list[CheckpointEntry]:
    """Complete checkpoints (index + data) of a run, oldest step first."""
    directory = layout.checkpoint_dir(run_dir)
    entries: list[CheckpointEntry] = []
    if not os.path.isdir(directory):
        return entries
    for name in os.listdir(directory):
        match = _CKPT_RE.match(name)
        if not match:
            continue
        prefix = os.path.join(directory, match.group("name"))
        files = checkpoint_files(prefix)
        if len(files) < 2:  # an index without data: a checkpoint being written or half deleted
            continue
        stats = [os.stat(f) for f in files]
        entries.append(CheckpointEntry(prefix=prefix, step=int(match.group("step")),
                                       mtime=max(s.st_mtime for s in stats), size=sum(s.st_size for s in stats),
                                       files=files))
    entries.sort(key=lambda e: (e.step, e.mtime))
    return entries


def read_state(checkpoint_dir: str) -> dict:
    """TensorFlow's checkpoint state file as {"latest": name or None, "all": [names], "timestamps": [floats]}."""
    state: dict = {"latest": None, "all": [], "timestamps": [], "last_preserved": None}
    path = os.path.join(checkpoint_dir, layout.STATE_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return state
    for line in lines:
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "model_checkpoint_path":
            state["latest"] = os.path.basename(value.strip('"'))
        elif key == "all_model_checkpoint_paths":
            state["all"].append(os.path.basename(value.strip('"')))
        elif key == "all_model_checkpoint_timestamps":
            state["timestamps"].append(float(value))
        elif key == "last_preserved_timestamp":
            state["last_preserved"] = float(value)
    return state


def state_text(names: list[str], timestamps: Optional[list[float]] = None,
               last_preserved: Optional[float] = None) -> str:
    """The state file naming `names` (oldest first; the last one is the latest), relative as TF writes them."""
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{n}"' for n in names]
    if timestamps and len(timestamps) == len(names):
        lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in timestamps]
    if last_preserved is not None:
        lines.append(f"last_preserved_timestamp: {last_preserved!r}")
    return "\n".join(lines) + "\n"


def write_state(checkpoint_dir: str, names: list[str], timestamps: Optional[list[float]] = None,
                last_preserved: Optional[float] = None) -> None:
    """Rewrite the state file for `names` atomically; with no names left the state file is removed."""
    path = os.path.join(checkpoint_dir, layout.STATE_FILE)
    if not names:
        if os.path.exists(path):
            os.remove(path)
        return
    atomic.write_text(path, state_text(names, timestamps, last_preserved))


def latest_entry(run_dir: str) -> Optional[CheckpointEntry]:
    """The checkpoint the state file names as latest if it is complete, else the highest step on disk.

    Falling back to the files on disk when the state file is missing, unreadable or names a checkpoint whose
    files are gone lets `train` resume instead of silently starting over beside the run's checkpoints.
    """
    entries = list_checkpoints(run_dir)
    if not entries:
        return None
    latest = read_state(layout.checkpoint_dir(run_dir))["latest"]
    for entry in entries:
        if entry.name == latest:
            return entry
    return entries[-1]


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The prefix of `latest_entry`, or None."""
    entry = latest_entry(run_dir)
    return entry.prefix if entry is not None else None


def ready_checkpoints(run_dir: str) -> list[CheckpointEntry]:
    """Complete checkpoints; when the run has a state file, only those it lists (fully written)."""
    entries = list_checkpoints(run_dir)
    state = read_state(layout.checkpoint_dir(run_dir))
    if state["all"] or state["latest"]:
        listed = set(state["all"]) | {state["latest"]}
        entries = [e for e in entries if e.name in listed]
    return entries


def entry_for(prefix: str) -> Optional[CheckpointEntry]:
    """The CheckpointEntry of a complete checkpoint prefix, or None."""
    for entry in list_checkpoints(layout.run_dir_of(prefix)):
        if os.path.realpath(entry.prefix) == os.path.realpath(prefix):
            return entry
    return None


def delete_checkpoint(entry: CheckpointEntry) -> None:
    """Remove one checkpoint's files, drop it from the state file and from metrics.json."""
    directory = os.path.dirname(entry.prefix)
    run_dir = os.path.dirname(directory)
    check_not_training(run_dir)
    state = read_state(directory)
    for path in entry.files:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    remaining = {e.name for e in list_checkpoints(run_dir)}
    names = [n for n in state["all"] if n in remaining]
    stamps = None
    if len(state["timestamps"]) == len(state["all"]):
        stamps = [t for n, t in zip(state["all"], state["timestamps"]) if n in remaining]
    if not names and remaining:
        names = [e.name for e in list_checkpoints(run_dir)]
        stamps = None
    write_state(directory, names, stamps, state["last_preserved"])
    forget_metrics(run_dir, [entry.name])


def check_deletable_run(run_dir: str, doing: str = "deleting") -> None:
    """CheckpointError unless `run_dir` is exactly a run directory (its layout proves it) and not the cwd."""
    real = os.path.realpath(run_dir)
    cwd = os.path.realpath(os.getcwd())
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise CheckpointError(f"{run_dir}: not {doing} the current directory (or one holding it); "
                              "name the run directory from outside it")
    check_not_training(run_dir, doing)
    if not layout.is_run_dir(run_dir):
        raise CheckpointError(f"{run_dir}: not {doing}: no {layout.CONFIG_FILE}, so not a run directory "
                              "written by `detkit train`")
    foreign = layout.foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise CheckpointError(f"{run_dir}: not {doing}: it holds {shown}, which detkit does not write in a run "
                              "directory; remove those yourself first if the run should go")


def delete_run(run_dir: str) -> None:
    """Delete a whole run directory, once its layout proves it is one (check_deletable_run)."""
    check_deletable_run(run_dir)
    shutil.rmtree(run_dir)
