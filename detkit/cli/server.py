"""`detkit server web`: serve a trained detector as a JSON API and a web page (needs `pip install detkit[web]`)."""
from __future__ import annotations

import ipaddress
import os
import socket
from typing import Optional

import click

from detkit.cli.common import config_options, echo_err, tensorflow
from detkit.cli.predict import checkpoint_source, predict_overrides
from detkit.errors import DetkitError

WEB_EXTRA_HELP = "`detkit server web` needs the web extra: pip install 'detkit[web]'"


@click.group("server")
def server_group() -> None:
    """Serve a trained detector over HTTP."""


def _require_web_extra() -> None:
    """DetkitError naming the extra when FastAPI, uvicorn or python-multipart is missing."""
    import importlib.util

    # python-multipart's module is `python_multipart` since 0.0.13, `multipart` before.
    wanted = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
    missing = [name for name, modules in wanted.items()
               if all(importlib.util.find_spec(module) is None for module in modules)]
    if missing:
        raise DetkitError(f"{WEB_EXTRA_HELP} (missing: {', '.join(missing)})")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the server is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: tuple[str, ...]) -> Optional[tuple[str, ...]]:
    """Host names the server answers to: this machine's on loopback (plus `extra`), else `extra` or any."""
    from detkit.server.guards import host_name, loopback_hosts

    if is_loopback(host):
        return loopback_hosts(host, extra)
    return tuple(host_name(h) for h in extra) or None


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


@server_group.command("web")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT|FILE.tar",
              help="A run directory (its newest checkpoint), a checkpoint prefix or a `detkit checkpoint pack` "
                   "file. Default: the run of -c's train.job_dir/run_name.")
@config_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default serves this machine only; 0.0.0.0 (all interfaces) "
                   "lets anyone on the network use the model.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port; 0 picks a free one (the URL is logged).")
@click.option("--min-prob", type=click.FloatRange(0.0, 1.0),
              help="Default score threshold of the API (default predict.min_prob); requests may send their own.")
@click.option("--max-detections", type=click.IntRange(min=1),
              help="Default cap on objects per image (default predict.max_detections).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Threads reading and decoding uploads at once. The model is loaded once, in this one "
                   "process, and runs one image at a time on its own thread; other requests queue for it.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest image file accepted; bigger uploads get 413 before being decoded.")
@click.option("--max-megapixels", default=50.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest image (width x height) accepted; bigger ones get 413 before being decoded.")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images waiting for the model before new ones get 503 (server busy).")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client has to send a request (its headers, then its whole upload); a slower "
                   "upload gets 408 and its connection is closed, so slow clients cannot crowd out others.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="On a loopback --host, also answer requests whose Host/Origin header is NAME (repeatable). "
                   "Others (a web page reaching 127.0.0.1 through DNS rebinding) get 403. "
                   "On another --host, answer only the NAMEs given, when any.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One stderr line per request.")
def web(checkpoint: Optional[str], config_files: tuple[str, ...], overrides: tuple[str, ...], host: str,
        port: int, min_prob: Optional[float], max_detections: Optional[int], workers: int,
        max_upload_mb: float, max_megapixels: float, max_queue: int, read_timeout: float,
        allow_hosts: tuple[str, ...], access_log: bool) -> None:
    """Serve a detector: a web page at / and a JSON API.

    \b
    POST /api/fasterrcnn/predict/  multipart field `image` (+ optional `min_prob`, `max_detections`)
                                   -> {"objects": [{"bbox", "label", "prob"}], "width", "height", "seconds"}
    GET  /api/health, GET /api/classes, GET /openapi.json
    """
    _require_web_extra()
    sock = bind_socket(host, port)  # before loading the model: a busy port fails in a second, not a minute
    try:
        if not is_loopback(host):
            echo_err(f"detkit: warning: listening on {host}: anyone who can reach this machine can use the model")
        with checkpoint_source(checkpoint, config_files, overrides) as source:
            _serve(sock, source, checkpoint, config_files, overrides, min_prob, max_detections, workers,
                   max_upload_mb, max_megapixels, max_queue, read_timeout, allowed_hosts(host, allow_hosts),
                   access_log)
    finally:
        sock.close()


def _serve(sock: socket.socket, source: str, checkpoint: Optional[str], config_files: tuple[str, ...],
           overrides: tuple[str, ...], min_prob: Optional[float], max_detections: Optional[int], workers: int,
           max_upload_mb: float, max_megapixels: float, max_queue: int, read_timeout: float,
           hosts: Optional[tuple[str, ...]], access_log: bool) -> None:
    """Load the model once, warm it up, and run uvicorn on the bound socket until interrupted."""
    import time

    tensorflow()
    import numpy as np

    from detkit.detector import Detector
    from detkit.server.app import ServerSettings, create_app
    from detkit.server.run import serve
    from detkit.server.uploads import Limits

    start = time.perf_counter()
    detector = Detector.from_checkpoint(source, predict_overrides(config_files, overrides))
    # One prediction before listening traces the model, so the first request is not the slow one.
    detector.predict(np.zeros((64, 64, 3), np.uint8))
    resolved = detector.checkpoint
    name = os.path.basename(os.path.normpath(checkpoint)) if checkpoint else os.path.basename(resolved.run_dir)
    cfg = detector.config.predict
    settings = ServerSettings(
        min_prob=cfg.min_prob if min_prob is None else min_prob,
        max_detections=cfg.max_detections if max_detections is None else max_detections,
        limits=Limits(max_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=int(max_megapixels * 1e6)),
        workers=workers,
        max_queue=max_queue,
        model_name=f"{name} (step {resolved.step})",
        read_timeout=read_timeout,
        allowed_hosts=hosts,
    )
    app = create_app(detector, settings)
    echo_err(f"detkit: loaded {settings.model_name}, {len(detector.class_names)} class(es), in "
             f"{time.perf_counter() - start:.1f} s")
    echo_err(f"detkit: serving on {url_of(sock)} (API: POST {url_of(sock)}api/fasterrcnn/predict/); Ctrl+C stops")
    serve(app, sock, access_log)
