"""The output directory of a conversion: refuse to clobber it, stage files, publish them last."""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Mapping, Optional, Sequence

from detkit.datasets.classes import CLASSES_FILE, classes_path, read_classes, write_classes
from detkit.datasets.tfrecord import SHARD_PATTERN, shard_name
from detkit.errors import DatasetError
from detkit.utils.atomic import make_temp_dir, remove_stale_temp, remove_stale_temp_files, write_json

SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def summary_name(split: str) -> str:
    """`<split>-summary.json`."""
    return f"{split}-summary.json"


def check_split_name(split: str) -> str:
    """`split` if usable in file names, else a DatasetError."""
    if not SPLIT_NAME_RE.match(split):
        raise DatasetError(f"split name {split!r}: use letters, digits, '_', '.' or '-' (e.g. train, test)")
    return split


def split_files(out_dir: str, split: str) -> list[str]:
    """Names of the files of `split` in `out_dir`: its shards and its summary."""
    if not os.path.isdir(out_dir):
        return []
    pattern = re.compile("^" + re.escape(split) + SHARD_PATTERN + "$")
    return sorted(n for n in os.listdir(out_dir) if pattern.match(n) or n == summary_name(split))


def check_writable(out_dir: str, splits: Sequence[str], overwrite: bool) -> None:
    """Refuse an output directory that already holds classes.json or files of these splits, unless overwrite."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError(f"output directory {out_dir} is a file")
    if overwrite:
        return
    found = [CLASSES_FILE] if os.path.exists(classes_path(out_dir)) else []
    for split in splits:
        found += split_files(out_dir, split)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise DatasetError(f"output directory {out_dir} already holds {shown}: use --overwrite to replace "
                           "them (other splits there are kept), or choose another --output-dir")


class Staging:
    """A hidden directory inside the output directory where a run writes before publishing.

    On error or interrupt it is removed, and so is the output directory if this run created it
    and it is empty: nothing half-written is left behind.
    """

    def __init__(self, out_dir: str, prefix: str):
        """Stage into a hidden `.prefix-*` directory of `out_dir` once entered."""
        self.out_dir = out_dir
        self.prefix = prefix
        self.created_out = False
        self.dir = ""

    def __enter__(self) -> "Staging":
        """Create the staging directory (and the output directory if needed)."""
        self.created_out = not os.path.exists(self.out_dir)
        # A run killed before publishing leaves its staging dir, one killed while publishing a half-written
        # temporary file: reclaim them (the outputs themselves are whole, old or new).
        remove_stale_temp(self.out_dir, self.prefix)
        remove_stale_temp_files(self.out_dir)
        try:
            self.dir = make_temp_dir(self.out_dir, self.prefix)
        except OSError as exc:
            raise DatasetError(f"output directory {self.out_dir}: cannot write ({exc.strerror or exc}); "
                               "choose a writable --output-dir") from None
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Any) -> None:
        """Remove the staging directory, and on failure an output directory this run created."""
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if exc_type is not None and self.created_out:
            try:
                os.rmdir(self.out_dir)  # only succeeds if empty
            except OSError:
                pass

    def publish(self, shards: Mapping[str, Sequence[str]], summaries: Mapping[str, dict],
                classes: Sequence[str]) -> None:
        """Move staged shards and summaries to their final names; classes.json is written last.

        Renames within one filesystem are atomic and quick; should a run die between them, the
        split's shard set is incomplete (k of N), which `tfrecord.find_shards` refuses.
        """
        cls_path = classes_path(self.out_dir)
        if os.path.exists(cls_path) and _read_or_none(self.out_dir) != list(classes):
            os.remove(cls_path)  # the old map no longer matches: the directory is incomplete until the end
        for split, paths in shards.items():
            for name in split_files(self.out_dir, split):
                os.remove(os.path.join(self.out_dir, name))
            for i, path in enumerate(paths):
                os.replace(path, os.path.join(self.out_dir, shard_name(split, i, len(paths))))
            write_json(os.path.join(self.out_dir, summary_name(split)), summaries[split])
        write_classes(cls_path, classes)


def _read_or_none(out_dir: str) -> list[str] | None:
    """The existing class map, or None if unreadable."""
    try:
        return read_classes(out_dir)
    except DatasetError:
        return None
