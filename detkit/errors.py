"""Errors that the CLI turns into one line on stderr and a non-zero exit code."""
from __future__ import annotations

import errno


class DetkitError(Exception):
    """A user-facing error: the message names the file, line or key and the fix."""
    exit_code = 1


class ConfigError(DetkitError):
    """An invalid config file, key, type or value."""
    exit_code = 2


class DatasetError(DetkitError):
    """Unreadable or malformed dataset input."""
    exit_code = 1


class CheckpointError(DetkitError):
    """A missing, corrupt or incompatible checkpoint."""
    exit_code = 1


class StateDictError(CheckpointError):
    """A torch state dict whose keys or tensor shapes do not fit the model."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether an OSError or TensorFlow error means the disk (or quota) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's first line, shortened, for a one-line message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM asked the command to stop (a scheduler preempting it); it stopped cleanly. Exit code 143."""
    exit_code = 143
