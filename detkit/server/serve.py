"""Run the web server: check the web extra, bind the socket, load the model once, hand both to uvicorn."""
from __future__ import annotations

import copy
import importlib.util
import os
import socket
import time
from typing import Any, Callable, Optional

import numpy as np

from detkit.errors import DetkitError
from detkit.server.engine import DEFAULT_READ_TIMEOUT

# Lazy imports: `detkit --help` loads this module, and FastAPI, uvicorn (the optional web extra) and the model
# (TensorFlow) must neither slow it down nor break it where the extra is not installed.

WEB_EXTRA_HELP = "`detkit server web` needs the web extra: pip install 'detkit[web]'"
# Connections and tasks uvicorn serves at once before answering 503 itself: bounds memory under a flood.
CONCURRENCY_PER_QUEUED_IMAGE = 2
CONCURRENCY_FLOOR = 32
KEEP_ALIVE_SECONDS = 5


def require_web_extra() -> None:
    """DetkitError naming the extra when FastAPI, uvicorn or python-multipart is missing."""
    # python-multipart's module is `python_multipart` since 0.0.13, `multipart` before.
    wanted = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
    missing = [name for name, modules in wanted.items()
               if all(importlib.util.find_spec(module) is None for module in modules)]
    if missing:
        raise DetkitError(f"{WEB_EXTRA_HELP} (missing: {', '.join(missing)})")


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0 picks a free one); DetkitError if the address is unusable."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise DetkitError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise DetkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port/ of a bound socket, IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


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

    from detkit.server.guards import timed_h11_protocol

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


def serve(sock: socket.socket, source: str, name: Optional[str], run_overrides: list[str],
          min_prob: Optional[float] = None, max_detections: Optional[int] = None, workers: int = 2,
          max_upload_mb: float = 20.0, max_megapixels: float = 50.0, max_queue: int = 64,
          access_log: bool = True, log: Callable[[str], None] = lambda message: None,
          read_timeout: float = DEFAULT_READ_TIMEOUT, hosts: Optional[tuple[str, ...]] = None,
          max_queued_megapixels: float = 256.0) -> None:
    """Load the model of `source` once, warm it up, and run uvicorn on the bound socket until interrupted.

    `name` is what the page and the API call the model (default: the run directory's name).
    """
    from detkit.inference import Detector
    from detkit.server.app import ServerSettings, create_app
    from detkit.server.uploads import Limits

    start = time.perf_counter()
    detector = Detector.from_checkpoint(source, run_overrides)
    # One prediction before listening traces the model, so the first request is not the slow one.
    detector.predict(np.zeros((64, 64, 3), np.uint8))
    resolved = detector.checkpoint
    cfg = detector.config.predict
    settings = ServerSettings(
        min_prob=cfg.min_prob if min_prob is None else min_prob,
        max_detections=cfg.max_detections if max_detections is None else max_detections,
        limits=Limits(max_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=int(max_megapixels * 1e6)),
        workers=workers,
        max_queue=max_queue,
        max_queued_pixels=int(max_queued_megapixels * 1e6),
        model_name=f"{name or os.path.basename(resolved.run_dir)} (step {resolved.step})",
        read_timeout=read_timeout,
        allowed_hosts=hosts,
    )
    app = create_app(detector, settings)
    log(f"detkit: loaded {settings.model_name}, {len(detector.class_names)} class(es), in "
        f"{time.perf_counter() - start:.1f} s")
    log(f"detkit: serving on {url_of(sock)} (API: POST {url_of(sock)}api/fasterrcnn/predict/); Ctrl+C stops")
    make_server(app, access_log).run(sockets=[sock])
