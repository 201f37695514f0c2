"""The output directory of a conversion: refuse to clobber it, stage files, publish them last."""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Mapping, Optional, Sequence

from detkit.datasets.classes import CLASSES_FILE, classes_path, write_classes
from detkit.datasets.tfrecord import SHARD_PATTERN, shard_name
from detkit.errors import DatasetError
from detkit.utils.atomic import (ensure_parent, make_temp_dir, remove_stale_temp, remove_stale_temp_files,
                                 replace_dir, write_json)
from detkit.utils.pause import pause_point

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
    """The next version of the output directory, built beside it and swapped in as one step.

    The new directory (a hidden sibling of the output directory) receives the new splits' shards and
    summaries, `classes.json`, and hard links to everything else the old one held (other splits, any other
    file); `publish` then exchanges the two directories in one rename, so a reader, or a kill at any moment,
    sees the whole old dataset or the whole new one. On error or interrupt the sibling is removed; one left by
    a killed run is removed by the next.
    """

    def __init__(self, out_dir: str, prefix: str):
        """Stage the next version of `out_dir` once entered; `prefix` names the command (transform, merge)."""
        self.out_dir = os.path.realpath(out_dir)  # a symlinked output: its target is replaced, not the link
        self.given = out_dir
        self.command = prefix
        self.prefix = f"{os.path.basename(self.out_dir)}.{prefix}"
        self.root = ""
        self.dir = ""

    def __enter__(self) -> "Staging":
        """Create the sibling directory and, inside it, the directory where records are written."""
        parent = os.path.dirname(self.out_dir)
        try:
            ensure_parent(self.out_dir)
            # A run killed before (or just after) publishing leaves its sibling: the output itself is whole.
            remove_stale_temp(parent, self.prefix)
            # Temporary files of writers killed inside the output (before this layout): never carried over.
            remove_stale_temp_files(self.out_dir)
            self.root = make_temp_dir(parent, self.prefix)
            self.dir = os.path.join(self.root, ".records")
            os.mkdir(self.dir)
        except OSError as exc:
            raise DatasetError(f"output directory {self.given}: cannot write ({exc.strerror or exc}); "
                               "choose a writable --output-dir") from None
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Any) -> None:
        """Remove the sibling directory (after publishing it holds the old output)."""
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, shards: Mapping[str, Sequence[str]], summaries: Mapping[str, dict],
                classes: Sequence[str]) -> None:
        """Name the staged shards and summaries, add classes.json and the old directory's other files, swap."""
        for split, paths in shards.items():
            for i, path in enumerate(paths):
                os.replace(path, os.path.join(self.root, shard_name(split, i, len(paths))))
            write_json(os.path.join(self.root, summary_name(split)), summaries[split])
        shutil.rmtree(self.dir)
        write_classes(classes_path(self.root), classes)
        if os.path.isdir(self.out_dir):
            replaced = {CLASSES_FILE, *(n for split in shards for n in split_files(self.out_dir, split))}
            _link_tree(self.out_dir, self.root, skip=replaced)
            shutil.copymode(self.out_dir, self.root)
        pause_point(f"{self.command}.swap")
        replace_dir(self.root, self.out_dir)
        pause_point(f"{self.command}.swapped")
        self.root = ""


def _link_tree(src: str, dst: str, skip: set) -> None:
    """Hard-link (copy where links are impossible) every entry of `src` except `skip` names into `dst`."""
    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    for name in os.listdir(src):
        if name in skip:
            continue
        a, b = os.path.join(src, name), os.path.join(dst, name)
        if os.path.islink(a):
            os.symlink(os.readlink(a), b)
        elif os.path.isdir(a):
            shutil.copytree(a, b, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(a, b)
