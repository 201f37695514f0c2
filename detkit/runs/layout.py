"""The names inside a run directory, in one place.

A run directory (written by `detkit train`, `train.job_dir/train.run_name`) holds:
    config.yml                  the full config the run was trained with
    classes.json                its class map (label i+1 = names[i])
    recipe.json                 what detkit/recipe derived from the data, each choice with its reason
    checkpoints/ckpt-N.index, checkpoints/ckpt-N.data-*   the checkpoints
    checkpoints/checkpoint      TensorFlow's checkpoint state file (which checkpoints exist, the latest)
    metrics.json                the results of `detkit eval`, per checkpoint and split
    train/, eval_<label>/       TensorBoard event files of training and of each evaluation
    detkit-pack.json            in a run made by `detkit checkpoint unpack`: the pack's manifest
    train.lock                  while `detkit train` runs: its pid and host (detkit.runs.lock)
    imported.json               in a run made by `detkit checkpoint import`
"""
from __future__ import annotations

import os
import re

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yml"
CLASSES_FILE = "classes.json"
STATE_FILE = "checkpoint"
METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.json"
# Written by `detkit checkpoint import` (detkit.pretrained.importer): what was imported, and the proof that it
# made the run (so that --overwrite replaces only an imported run, never a trained one).
IMPORT_RECORD_FILE = "imported.json"
LOCK_FILE = "train.lock"
PACK_MANIFEST_FILE = "detkit-pack.json"  # in a packed .tar, and in the run directory unpacked from it
TRAIN_LOG_DIR = "train"
# Everything `detkit train`, `eval` and `checkpoint unpack` write in a run directory; nothing else is deleted.
RUN_ENTRIES = frozenset({CONFIG_FILE, CLASSES_FILE, CHECKPOINT_DIR, METRICS_FILE, LOCK_FILE, PACK_MANIFEST_FILE,
                         TRAIN_LOG_DIR, RECIPE_FILE, IMPORT_RECORD_FILE})
_CHECKPOINT_ENTRY = re.compile(r"^ckpt-\d+(\.index|\.data-\d+-of-\d+|_temp[^/]*)$")
_TEMP_ENTRY = re.compile(r"^\..+\.tmp-\d+$")  # detkit.utils.atomic's temporary names
_EVENTS_ENTRY = re.compile(r"^events\.out\.tfevents\.")  # TensorBoard's event files


def checkpoint_dir(run_dir: str) -> str:
    """Where a run keeps its checkpoints."""
    return os.path.join(run_dir, CHECKPOINT_DIR)


def config_path(run_dir: str) -> str:
    """The run's config.yml."""
    return os.path.join(run_dir, CONFIG_FILE)


def classes_path(run_dir: str) -> str:
    """The run's classes.json."""
    return os.path.join(run_dir, CLASSES_FILE)


def recipe_path(run_dir: str) -> str:
    """The run's recipe.json."""
    return os.path.join(run_dir, RECIPE_FILE)


def metrics_path(run_dir: str) -> str:
    """The run's metrics.json."""
    return os.path.join(run_dir, METRICS_FILE)


def lock_path(run_dir: str) -> str:
    """The run's lock file, present while a training holds it."""
    return os.path.join(run_dir, LOCK_FILE)


def eval_log_dir(run_dir: str, label: str) -> str:
    """TensorBoard directory of the evaluations stored under `label`."""
    return os.path.join(run_dir, f"eval_{label}")


def is_run_dir(path: str) -> bool:
    """A directory holding a run's config.yml."""
    return os.path.isfile(config_path(path))


def run_dir_of(prefix: str) -> str:
    """The run directory of a RUN/checkpoints/ckpt-N prefix."""
    return os.path.dirname(os.path.dirname(prefix))


def foreign_entries(run_dir: str) -> list[str]:
    """Names in `run_dir` (and its checkpoints/) that a run directory never holds: proof it is something else."""
    found = []
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if name == TRAIN_LOG_DIR or name.startswith("eval_"):
            found += _foreign_log_entries(path, name)
        elif not (name in RUN_ENTRIES or _TEMP_ENTRY.match(name)):
            found.append(name)
    directory = checkpoint_dir(run_dir)
    if os.path.isdir(directory):
        found += [os.path.join(CHECKPOINT_DIR, n) for n in sorted(os.listdir(directory))
                  if n != STATE_FILE and not _CHECKPOINT_ENTRY.match(n) and not _TEMP_ENTRY.match(n)]
    elif os.path.lexists(directory):
        found.append(CHECKPOINT_DIR)
    return found


def _foreign_log_entries(path: str, name: str) -> list[str]:
    """What a TensorBoard log directory `name` of a run holds besides event files: all of it if not a directory."""
    if not os.path.isdir(path) or os.path.islink(path):
        return [name]
    return [os.path.join(name, n) for n in sorted(os.listdir(path))
            if not ((_EVENTS_ENTRY.match(n) or _TEMP_ENTRY.match(n)) and os.path.isfile(os.path.join(path, n)))]
