"""Write files so that a kill at any moment leaves the old file or the new one, never a broken one."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterator

from PIL import Image


def temp_path_for(path: str) -> str:
    """A hidden temporary name in the same directory as `path` (same filesystem, so rename is atomic)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def replace_dir(src: str, dst: str) -> None:
    """Move directory `src` to `dst`, replacing an existing `dst`; a kill leaves the old or the new one.

    On Linux the two are swapped in one step; elsewhere by two renames, with the old one kept beside
    `dst` as `.NAME.old` for the instant in between.
    """
    if not os.path.isdir(dst):
        os.replace(src, dst)
        return
    if _exchange(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old directory
        return
    old = os.path.join(os.path.dirname(os.path.abspath(dst)), f".{os.path.basename(os.path.abspath(dst))}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def ensure_parent(path: str) -> None:
    """Create `path`'s directory; the OSError of a regular file in the way names that file."""
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        # os.makedirs would say "File exists" or "Not a directory", naming neither the file nor the problem.
        raise NotADirectoryError(errno.ENOTDIR, f"{probe} is a file, not a directory")
    os.makedirs(parent, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write; on success it is renamed over `path`, on error removed."""
    ensure_parent(path)
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


def save_image(path: str, image: Any, **options: Any) -> None:
    """Atomically save a Pillow image; the format comes from `path`'s extension, as with Image.save."""
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **options)


def make_temp_dir(parent: str, prefix: str) -> str:
    """A fresh hidden directory under `parent` for staging outputs before rename; names this process's id."""
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-", dir=parent)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_dead(parent: str, pattern: "re.Pattern[str]", is_kind, remove) -> list[str]:
    """Remove the entries of `parent` whose name matches `pattern` (group 1: a PID) when that PID is gone."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        path = os.path.join(parent, name)
        if match and is_kind(path) and not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                remove(path)
                removed.append(path)
    return removed


def remove_stale_temp_files(parent: str) -> list[str]:
    """Remove `.NAME.tmp-PID` files (`temp_path_for`) left in `parent` by killed writers (PID gone)."""
    return _remove_if_dead(parent, re.compile(r"^\..+\.tmp-(\d+)$"), os.path.isfile, os.remove)


def remove_stale_temp(parent: str, prefix: str) -> list[str]:
    """Remove staging dirs `.prefix-PID-*` left in `parent` by killed runs (PID gone); returns what was removed."""
    return _remove_if_dead(parent, re.compile(r"^\." + re.escape(prefix) + r"-(\d+)-"), os.path.isdir,
                           lambda path: shutil.rmtree(path, ignore_errors=True))
