"""Run directories without TensorFlow: find runs and checkpoints, record eval metrics, pack and unpack.

A run directory (written by `detkit train`) holds config.yml, classes.json, checkpoints/ckpt-N.{index,data-*}
with TensorFlow's `checkpoints/checkpoint` state file, and metrics.json once `detkit eval` has run.

A packed checkpoint is a tar (optionally gzipped) of one checkpoint with what is needed to use it:
    detkit-pack.json            format, step, source run, detkit version, date
    config.yml, classes.json    the run's config and class map
    checkpoints/checkpoint      state file naming the one checkpoint
    checkpoints/ckpt-N.index, checkpoints/ckpt-N.data-*
    metrics.json                the eval metrics of that checkpoint, if any
Unpacked, it is a run directory again.
"""
from __future__ import annotations

import datetime
import glob
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from detkit.errors import CheckpointError
from detkit.utils import atomic

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yml"
CLASSES_FILE = "classes.json"
STATE_FILE = "checkpoint"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "detkit-pack.json"
PACK_FORMAT = 1
PACK_EXTENSIONS = (".tar", ".tar.gz", ".tgz")

_CKPT_RE = re.compile(r"^(?P<name>.+-(?P<step>\d+))\.index$")


# ---------------------------------------------------------------- checkpoints of a run
@dataclass
class CheckpointEntry:
    """One checkpoint on disk."""

    prefix: str
    step: int
    mtime: float
    size: int
    files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
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
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    entries = []
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
    path = os.path.join(checkpoint_dir, STATE_FILE)
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


def write_state(checkpoint_dir: str, names: list[str], timestamps: Optional[list[float]] = None,
                last_preserved: Optional[float] = None) -> None:
    """Rewrite the state file for `names` (oldest first; the last one is the latest), atomically.

    Relative names, as tf.train.CheckpointManager writes them, so the directory can be moved.
    With no names left the state file is removed.
    """
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not names:
        if os.path.exists(path):
            os.remove(path)
        return
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{n}"' for n in names]
    if timestamps and len(timestamps) == len(names):
        lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in timestamps]
    if last_preserved is not None:
        lines.append(f"last_preserved_timestamp: {last_preserved!r}")
    atomic.write_text(path, "\n".join(lines) + "\n")


def latest_entry(run_dir: str) -> Optional[CheckpointEntry]:
    """The checkpoint the state file names as latest if it exists, else the highest step on disk."""
    entries = list_checkpoints(run_dir)
    if not entries:
        return None
    latest = read_state(os.path.join(run_dir, CHECKPOINT_DIR))["latest"]
    for entry in entries:
        if entry.name == latest:
            return entry
    return entries[-1]


def is_run_dir(path: str) -> bool:
    """A directory holding a run's config.yml."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


@dataclass
class RunPath:
    """What a RUN_OR_CKPT argument names: a run, and one of its checkpoints if one was named."""

    run_dir: str
    checkpoint: Optional[CheckpointEntry]  # the named checkpoint; None = the whole run


def resolve_run_path(path: str) -> RunPath:
    """A run directory, its checkpoints/ folder, or a checkpoint prefix (ckpt-N, or ckpt-N.index)."""
    norm = os.path.normpath(path)
    if norm.endswith(".index"):
        norm = norm[: -len(".index")]
    if os.path.isdir(norm):
        run_dir = os.path.dirname(norm) if os.path.basename(norm) == CHECKPOINT_DIR else norm
        if not is_run_dir(run_dir) and not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR)):
            raise CheckpointError(f"{path}: not a run directory (no {CONFIG_FILE} or {CHECKPOINT_DIR}/ in it)")
        return RunPath(run_dir=run_dir, checkpoint=None)
    if os.path.isfile(norm + ".index"):
        run_dir = os.path.dirname(os.path.dirname(norm))
        for entry in list_checkpoints(run_dir):
            if os.path.normpath(entry.prefix) == norm:
                return RunPath(run_dir=run_dir, checkpoint=entry)
        raise CheckpointError(f"{path}: checkpoint has an index but no data file (incomplete or being written)")
    if os.path.isfile(norm):
        raise CheckpointError(f"{path}: not a run directory, checkpoint or `detkit checkpoint pack` file "
                              "(not a tar archive); expected RUN_DIR, RUN_DIR/checkpoints/ckpt-N or FILE.tar")
    raise CheckpointError(f"{path}: not a run directory or checkpoint (expected RUN_DIR or RUN_DIR/checkpoints/ckpt-N)")


def find_runs(job_dir: str, max_depth: int = 3) -> list[str]:
    """Run directories at or below `job_dir` (a run inside a run is not searched for), sorted."""
    if not os.path.isdir(job_dir):
        raise CheckpointError(f"{job_dir}: no such directory (the runs are under train.job_dir, default ./jobs)")
    if is_run_dir(job_dir):
        return [job_dir]
    runs = []
    base_depth = os.path.normpath(job_dir).count(os.sep)
    for root, dirs, _ in os.walk(job_dir):
        if root != job_dir and (is_run_dir(root) or os.path.isdir(os.path.join(root, CHECKPOINT_DIR))):
            runs.append(root)
            dirs[:] = []
        elif os.path.normpath(root).count(os.sep) - base_depth >= max_depth:
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(runs)


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


# ---------------------------------------------------------------- metrics.json
def read_metrics(run_dir: str) -> dict:
    """{checkpoint name: {"step": N, "splits": {label: {...metrics, "evaluated_at": ...}}}}; {} if none."""
    path = os.path.join(run_dir, METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_metrics(run_dir: str, checkpoint_name: str, step: int, label: str, metrics: dict) -> None:
    """Add one evaluation to RUN/metrics.json (read, update, atomic rewrite)."""
    data = read_metrics(run_dir)
    entry = data.setdefault(checkpoint_name, {"step": step, "splits": {}})
    entry["step"] = step
    entry.setdefault("splits", {})[label] = dict(metrics, evaluated_at=time.time())
    ordered = dict(sorted(data.items(), key=lambda kv: (kv[1].get("step", 0) if isinstance(kv[1], dict) else 0)))
    atomic.write_json(os.path.join(run_dir, METRICS_FILE), ordered)


def forget_metrics(run_dir: str, checkpoint_names: list[str]) -> None:
    """Drop the metrics of deleted checkpoints."""
    data = read_metrics(run_dir)
    if any(name in data for name in checkpoint_names):
        for name in checkpoint_names:
            data.pop(name, None)
        atomic.write_json(os.path.join(run_dir, METRICS_FILE), data)


def summary_metric(entry: Optional[dict]) -> str:
    """"test mAP@.5 0.512" style text for the metrics of one checkpoint, or ""."""
    if not entry:
        return ""
    parts = []
    for label, metrics in sorted(entry.get("splits", {}).items()):
        if isinstance(metrics, dict) and "map50" in metrics:
            parts.append(f"{label} mAP@.5 {metrics['map50']:.3f}")
    return ", ".join(parts)


# ---------------------------------------------------------------- delete
def delete_checkpoint(entry: CheckpointEntry) -> None:
    """Remove one checkpoint's files, drop it from the state file and from metrics.json."""
    directory = os.path.dirname(entry.prefix)
    run_dir = os.path.dirname(directory)
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


# ---------------------------------------------------------------- pack / unpack
def is_packed(path: str) -> bool:
    """A file that looks like a packed checkpoint (a tar archive)."""
    if not os.path.isfile(path):
        return False
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


@dataclass
class PackInfo:
    """What `pack` wrote."""

    output: str
    run_dir: str
    checkpoint: str
    step: int
    size: int


def pack(path: str, output: str, checkpoint: Optional[str] = None) -> PackInfo:
    """Write the newest (or the named) checkpoint of a run, with its config and class map, to a tar file."""
    target = resolve_run_path(path)
    run_dir = target.run_dir
    entry = target.checkpoint
    if checkpoint:
        matches = [e for e in list_checkpoints(run_dir)
                   if e.name == os.path.basename(checkpoint) or str(e.step) == str(checkpoint)]
        if not matches:
            raise CheckpointError(f"{run_dir}: no checkpoint {checkpoint!r} "
                                  f"(have: {', '.join(e.name for e in list_checkpoints(run_dir)) or 'none'})")
        entry = matches[-1]
    if entry is None:
        entry = latest_entry(run_dir)
    if entry is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to pack (train first with `detkit train -c config.yml`)")
    for name in (CONFIG_FILE, CLASSES_FILE):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise CheckpointError(f"{run_dir}: no {name}; cannot pack a checkpoint without it")
    from detkit import __version__

    manifest = {
        "format": PACK_FORMAT,
        "checkpoint": entry.name,
        "step": entry.step,
        "run_name": os.path.basename(os.path.abspath(run_dir)),
        "detkit_version": __version__,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    metrics = read_metrics(run_dir).get(entry.name)
    mode = "w:gz" if output.endswith((".gz", ".tgz")) else "w"

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    try:
        with atomic.atomic_path(output) as tmp:
            with tarfile.open(tmp, mode) as tar:
                add_bytes(tar, MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
                tar.add(os.path.join(run_dir, CONFIG_FILE), CONFIG_FILE)
                tar.add(os.path.join(run_dir, CLASSES_FILE), CLASSES_FILE)
                state = f'model_checkpoint_path: "{entry.name}"\nall_model_checkpoint_paths: "{entry.name}"\n'
                add_bytes(tar, f"{CHECKPOINT_DIR}/{STATE_FILE}", state.encode())
                for file in entry.files:
                    tar.add(file, f"{CHECKPOINT_DIR}/{os.path.basename(file)}")
                if metrics:
                    add_bytes(tar, METRICS_FILE, (json.dumps({entry.name: metrics}, indent=2) + "\n").encode())
    except OSError as exc:
        raise CheckpointError(f"{output}: cannot write ({exc.strerror or exc})") from None
    return PackInfo(output=output, run_dir=run_dir, checkpoint=entry.prefix, step=entry.step,
                    size=os.path.getsize(output))


def _safe_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    """Regular files and folders with relative paths that stay inside the target; anything else is refused."""
    members = []
    for member in tar.getmembers():
        name = member.name
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or os.path.isabs(name):
            raise CheckpointError(f"{source}: refusing to unpack unsafe path {name!r}")
        if not (member.isfile() or member.isdir()):
            raise CheckpointError(f"{source}: refusing to unpack {name!r} (links and devices are not allowed)")
        members.append(member)
    return members


def read_manifest(tar_path: str) -> dict:
    """The detkit-pack.json of a packed checkpoint; CheckpointError if it is not one."""
    try:
        with tarfile.open(tar_path) as tar:
            try:
                fh = tar.extractfile(MANIFEST_FILE)
            except KeyError:
                fh = None
            if fh is None:
                raise CheckpointError(f"{tar_path}: not a packed detkit checkpoint (no {MANIFEST_FILE}; "
                                      "make one with `detkit checkpoint pack RUN --output FILE.tar`)")
            manifest = json.loads(fh.read().decode("utf-8"))
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{tar_path}: cannot read packed checkpoint ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise CheckpointError(f"{tar_path}: unsupported pack format {manifest.get('format') if isinstance(manifest, dict) else '?'}")
    return manifest


def unpack(tar_path: str, output_dir: str, overwrite: bool = False) -> str:
    """Extract a packed checkpoint into `output_dir` (a run directory), staged then renamed; returns it."""
    manifest = read_manifest(tar_path)
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        if not overwrite:
            raise CheckpointError(f"{output_dir}: already exists and is not empty (use --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        with tarfile.open(tar_path) as tar:
            members = _safe_members(tar, tar_path)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(staging, members=members)
        prefix = os.path.join(staging, CHECKPOINT_DIR, manifest.get("checkpoint", ""))
        for name in (CONFIG_FILE, CLASSES_FILE):
            if not os.path.isfile(os.path.join(staging, name)):
                raise CheckpointError(f"{tar_path}: packed checkpoint has no {name}")
        if len(checkpoint_files(prefix)) < 2:
            raise CheckpointError(f"{tar_path}: packed checkpoint {manifest.get('checkpoint')} is incomplete")
        atomic.replace_dir(staging, output_dir)
    except (tarfile.TarError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"{tar_path}: cannot unpack ({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


# ---------------------------------------------------------------- which run a command means
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
    if not is_run_dir(target.run_dir):
        raise CheckpointError(f"{target.run_dir}: no {CONFIG_FILE} beside the checkpoint; cannot rebuild the model")
    return target
