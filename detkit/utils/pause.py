"""Named pause points, so that tests can kill a command at an exact step instead of after a guessed delay.

With `DETKIT_PAUSE_AT=NAME` in the environment, the process reaching `pause_point(NAME)` writes its pid to
the file `DETKIT_PAUSE_FILE` (when set), says so on stderr and sleeps, waiting to be killed. Unset, a pause
point costs one dictionary lookup. A pause ends early when `wake()` is called (by a signal handler).
"""
from __future__ import annotations

import os
import sys
import threading

PAUSE_ENV = "DETKIT_PAUSE_AT"
PAUSE_FILE_ENV = "DETKIT_PAUSE_FILE"
PAUSE_SECONDS = 600.0
_wake = threading.Event()


def pause_point(name: str) -> None:
    """Stop here (for at most ten minutes) when DETKIT_PAUSE_AT names this point."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"detkit: paused at {name} (pid {os.getpid()})", file=sys.stderr, flush=True)
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        # Renamed into place: a test polling for the file must never read it half written.
        with open(marker + ".part", "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {name}\n")
        os.replace(marker + ".part", marker)
    _wake.wait(PAUSE_SECONDS)


def wake() -> None:
    """End the current pause, if any (safe to call from a signal handler)."""
    _wake.set()
