"""Run directories: their layout, checkpoints, config, metrics, packing, and which run the user means.

Everything here works without TensorFlow except `detkit.runs.restore` (loading weights into a model),
which is not imported by this package.
"""
from detkit.runs.checkpoints import (
    CheckpointEntry,
    check_deletable_run,
    delete_checkpoint,
    delete_run,
    latest_checkpoint,
    latest_entry,
    list_checkpoints,
    ready_checkpoints,
    step_of,
)
from detkit.runs.config import load_class_names, load_run_config
from detkit.runs.exported import exported_model
from detkit.runs.metrics import read_metrics, record_metrics
from detkit.runs.pack import checkpoint_source, pack, read_manifest, unpack
from detkit.runs.resolve import (
    ResolvedCheckpoint,
    RunPath,
    find_runs,
    resolve,
    resolve_run_path,
    run_from_config,
)

__all__ = [
    "CheckpointEntry", "ResolvedCheckpoint", "RunPath", "check_deletable_run", "checkpoint_source",
    "delete_checkpoint", "delete_run", "exported_model", "find_runs",
    "latest_checkpoint", "latest_entry", "list_checkpoints", "load_class_names", "load_run_config", "pack",
    "read_manifest", "read_metrics", "ready_checkpoints", "record_metrics", "resolve", "resolve_run_path",
    "run_from_config", "step_of", "unpack",
]
