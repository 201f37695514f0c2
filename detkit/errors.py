"""Errors that the CLI turns into one line on stderr and a non-zero exit code."""
from __future__ import annotations


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
