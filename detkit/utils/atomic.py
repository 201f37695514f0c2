"""Write files so that a kill at any moment leaves the old file or the new one, never a broken one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def temp_path_for(path: str) -> str:
    """A hidden temporary name in the same directory as `path` (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def replace_dir(src: str, dst: str) -> None:
    """Move directory `src` to `dst`, replacing an existing `dst` by two renames (never half-written)."""
    if os.path.isdir(dst):
        old = src.rstrip(os.sep) + ".old"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write; on success it is renamed over `path`, on error removed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if os.path.isdir(tmp):
            replace_dir(tmp, path)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def write_bytes(path: str, data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_json(path: str, obj: Any) -> None:
    """Atomically write pretty JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def make_temp_dir(parent: str, prefix: str) -> str:
    """A fresh hidden directory under `parent` for staging outputs before rename."""
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{prefix}-", dir=parent)
