"""Pack one checkpoint of a run, with its config and class map, into a single tar file, and unpack it.

A packed checkpoint is a tar (optionally gzipped):
    detkit-pack.json            format, step, source run, detkit version, date
    config.yml, classes.json    the run's config and class map
    checkpoints/checkpoint      state file naming the one checkpoint
    checkpoints/ckpt-N.index, checkpoints/ckpt-N.data-*
    metrics.json                the eval metrics of that checkpoint, if any
Unpacked, it is a run directory again.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from detkit.config import load_config
from detkit.errors import CheckpointError
from detkit.runs.checkpoints import check_deletable_run, checkpoint_files, latest_entry, list_checkpoints, state_text
from detkit.runs.exported import exported_model
from detkit.runs.layout import CHECKPOINT_DIR, CLASSES_FILE, CONFIG_FILE, METRICS_FILE, PACK_MANIFEST_FILE, STATE_FILE
from detkit.runs.metrics import read_metrics
from detkit.runs.resolve import NO_CHECKPOINT_HELP, check_has_checkpoint, resolve_run_path, run_from_config
from detkit.utils import atomic
from detkit.version import __version__

STAGING_PREFIX = "unpack"
PACK_FORMAT = 1


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


def pack(path: str, output: str, checkpoint: Optional[str] = None, overwrite: bool = False) -> PackInfo:
    """Write the newest (or the named) checkpoint of a run, with its config and class map, to a tar file.

    An existing `output` is replaced only with `overwrite`, and only if it is an earlier pack.
    """
    if os.path.lexists(output):
        if os.path.isdir(output):
            raise CheckpointError(f"{output}: is a directory; --output names the .tar file to write")
        if not overwrite:
            raise CheckpointError(f"{output}: already exists; pass --overwrite to replace it, or choose another "
                                  "--output")
        try:
            read_manifest(output)
        except CheckpointError:
            raise CheckpointError(f"{output}: not replacing it: it is not a `detkit checkpoint pack` file; "
                                  "choose another --output") from None
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
                add_bytes(tar, PACK_MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
                tar.add(os.path.join(run_dir, CONFIG_FILE), CONFIG_FILE)
                tar.add(os.path.join(run_dir, CLASSES_FILE), CLASSES_FILE)
                add_bytes(tar, f"{CHECKPOINT_DIR}/{STATE_FILE}", state_text([entry.name]).encode())
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
                fh = tar.extractfile(PACK_MANIFEST_FILE)
            except KeyError:
                fh = None
            if fh is None:
                raise CheckpointError(f"{tar_path}: not a packed detkit checkpoint (no {PACK_MANIFEST_FILE}; "
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
        if not os.path.isdir(output_dir):
            raise CheckpointError(f"{output_dir}: is a file; --overwrite replaces only an earlier run directory")
        check_deletable_run(output_dir, doing="replacing")
    parent = os.path.dirname(os.path.abspath(output_dir))
    atomic.remove_stale_temp(parent, STAGING_PREFIX)
    staging = atomic.make_temp_dir(parent, STAGING_PREFIX)
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


@contextlib.contextmanager
def checkpoint_source(checkpoint: Optional[str], config_files: Sequence[str] = (),
                      overrides: Sequence[str] = ()) -> Iterator[str]:
    """The run dir or checkpoint prefix to load: `checkpoint` (a packed .tar is unpacked to a temporary
    directory for the duration), else train.job_dir/train.run_name of the config files."""
    if checkpoint:
        if is_packed(checkpoint):
            tmp = tempfile.mkdtemp(prefix="detkit-unpacked-")
            try:
                yield unpack(checkpoint, os.path.join(tmp, "run"), overwrite=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        if checkpoint.endswith(".index") and os.path.isfile(checkpoint):
            checkpoint = checkpoint[: -len(".index")]
        if os.path.isdir(checkpoint) and exported_model(checkpoint) is not None:
            yield checkpoint
            return
        check_has_checkpoint(checkpoint)
        yield checkpoint
        return
    if not config_files:
        raise CheckpointError(NO_CHECKPOINT_HELP)
    cfg = load_config(tuple(config_files), tuple(overrides))
    run_dir = run_from_config(cfg.train.job_dir, cfg.train.run_name)
    check_has_checkpoint(run_dir)
    yield run_dir
