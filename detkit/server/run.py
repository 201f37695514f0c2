"""Run a server app with uvicorn on an already bound socket: logging to stderr, concurrency and read limits."""
from __future__ import annotations

import copy
import socket
from typing import Any

from detkit.server.guards import timed_h11_protocol

# Connections and tasks uvicorn serves at once before answering 503 itself: bounds memory under a flood.
CONCURRENCY_PER_QUEUED_IMAGE = 2
CONCURRENCY_FLOOR = 32
KEEP_ALIVE_SECONDS = 5


def log_config(access_log: bool) -> dict:
    """uvicorn's logging with every line, access lines included, on stderr (stdout stays clean)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["detkit.server"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if not access_log:
        config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    return config


def make_server(app: Any, access_log: bool = True, **overrides: Any) -> Any:
    """A uvicorn.Server for `app` (a detkit.server.app.create_app result) with detkit's limits."""
    import uvicorn

    settings = app.state.settings
    options = dict(
        log_config=log_config(access_log), access_log=access_log, workers=1,
        limit_concurrency=max(CONCURRENCY_FLOOR, CONCURRENCY_PER_QUEUED_IMAGE * settings.max_queue),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # A client must send its request head within the read timeout too, not only its body.
        http=timed_h11_protocol(settings.read_timeout),
    )
    options.update(overrides)
    return uvicorn.Server(uvicorn.Config(app, **options))


def serve(app: Any, sock: socket.socket, access_log: bool = True) -> None:
    """Serve `app` on the bound socket until interrupted."""
    make_server(app, access_log).run(sockets=[sock])
