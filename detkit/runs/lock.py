"""One `detkit train` per run directory: a lock file naming the holder's pid and host.

Two trainings on one run would rotate each other's checkpoints away. The lock is a file created with
O_EXCL; a lock left by a process that died (same host, pid no longer running) is taken over, one held on
another host cannot be checked from here and is refused with the command that removes it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Callable, Optional

from detkit.errors import DetkitError
from detkit.runs.layout import LOCK_FILE, lock_path
from detkit.utils.atomic import ensure_parent, pid_alive


class RunLocked(DetkitError):
    """Another `detkit train` holds this run directory."""


def read_holder(run_dir: str) -> Optional[dict]:
    """{"pid", "host", "started"} of the lock's holder, {} if unreadable, None if the run is not locked."""
    try:
        with open(lock_path(run_dir), encoding="utf-8") as fh:
            holder = json.load(fh)
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def holder_alive(holder: dict) -> bool:
    """Whether the holder may still be running: always True for another host (it cannot be checked)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)


def check_not_training(run_dir: str, doing: str = "deleting") -> None:
    """RunLocked when a live `detkit train` holds `run_dir`: nothing may delete or replace it meanwhile."""
    holder = read_holder(run_dir)
    if holder and holder_alive(holder):
        where = holder.get("host", "?")
        raise RunLocked(f"{run_dir}: not {doing}: `detkit train` pid {holder.get('pid')} on host {where} holds it "
                        f"({LOCK_FILE}); wait for it or stop it first"
                        + ("" if where == socket.gethostname() else f"; if that process is gone, delete {lock_path(run_dir)}"))


class RunLock:
    """Hold `run_dir`'s lock while training; a context manager."""

    def __init__(self, run_dir: str, log: Callable[[str], None] = lambda message: None):
        self.run_dir = run_dir
        self.path = lock_path(run_dir)
        self.log = log
        self.held = False
        self.created_dir = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or RunLocked naming its live holder; OSError if the run directory is not writable."""
        self.created_dir = not os.path.isdir(self.run_dir)
        ensure_parent(self.path)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return
        raise RunLocked(f"{self.path}: cannot take the run's lock (it keeps changing hands); try again")

    def _take_over_if_stale(self) -> None:
        holder = read_holder(self.run_dir)
        if holder is None:
            return  # released meanwhile: try again
        if not holder:
            # Written by a process killed between creating and filling it: it never trained here.
            if time.time() - _mtime(self.path) < 5:
                raise RunLocked(f"{self.run_dir}: another `detkit train` is starting on this run; try again")
        elif holder_alive(holder):
            where = holder.get("host", "?")
            raise RunLocked(
                f"{self.run_dir}: already being trained by pid {holder.get('pid')} on host {where} "
                f"(since {holder.get('started', '?')}); wait for it, stop it, or use another train.run_name"
                + ("" if where == socket.gethostname() else f"; if that process is gone, delete {self.path}"))
        else:
            self.log(f"taking over {self.path}: pid {holder.get('pid')} on this host is no longer running")
        # Rename first, so that of two processes taking over the same stale lock only one succeeds.
        stale = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, stale)
        except FileNotFoundError:
            return
        os.remove(stale)

    def release(self) -> None:
        """Remove the lock if this process holds it (and the run directory if it made it and it stayed empty)."""
        if self.held and (read_holder(self.run_dir) or {}).get("pid") == os.getpid():
            try:
                os.remove(self.path)
                if self.created_dir:
                    os.rmdir(self.run_dir)  # only succeeds when empty: a run that failed before writing anything
            except OSError:
                pass
        self.held = False


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
