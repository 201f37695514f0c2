"""`detkit server web`: serve a trained detector as a JSON API and a web page (needs `pip install detkit[web]`)."""
from __future__ import annotations

import os
from typing import Optional

import click

from detkit.cli.common import checkpoint_or_default, config_options, echo_err, run_overrides, tensorflow
from detkit.runs import checkpoint_source
from detkit.server.engine import DEFAULT_READ_TIMEOUT
from detkit.server.hosts import allowed_hosts, is_loopback
from detkit.server.serve import bind_socket, require_web_extra, serve


@click.group("server")
def server_group() -> None:
    """Serve a trained detector over HTTP."""


@server_group.command("web")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT|FILE.tar",
              help="A run directory (its newest checkpoint), a checkpoint prefix or a `detkit checkpoint pack` "
                   "file. Default: the run of -c's train.job_dir/run_name; with no -c either, the downloaded "
                   "model (accurate, else mobile, else fast).")
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
@click.option("--max-queued-megapixels", default=256.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Decoded pixels of all images waiting for the model (3 bytes each); an upload that would go "
                   "over gets 503 after its header is read, before it is decoded. One image is always let in.")
@click.option("--read-timeout", default=DEFAULT_READ_TIMEOUT, show_default=True, type=click.FloatRange(min=0, min_open=True),
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
        max_upload_mb: float, max_megapixels: float, max_queue: int, max_queued_megapixels: float,
        read_timeout: float,
        allow_hosts: tuple[str, ...], access_log: bool) -> None:
    """Serve a detector: a web page at / and a JSON API.

    \b
    POST /api/fasterrcnn/predict/  multipart field `image` (+ optional `min_prob`, `max_detections`)
                                   -> {"objects": [{"bbox", "label", "prob"}], "width", "height", "seconds"}
    GET  /api/health, GET /api/classes, GET /openapi.json
    """
    require_web_extra()
    checkpoint = checkpoint_or_default(checkpoint, config_files)
    sock = bind_socket(host, port)  # before loading the model: a busy port fails in a second, not a minute
    try:
        if not is_loopback(host):
            echo_err(f"detkit: warning: listening on {host}: anyone who can reach this machine can use the model")
        with checkpoint_source(checkpoint, config_files, overrides) as source:
            tensorflow()
            serve(sock, source, os.path.basename(os.path.normpath(checkpoint)) if checkpoint else None,
                  run_overrides(config_files, overrides, "predict"), min_prob, max_detections, workers,
                  max_upload_mb, max_megapixels, max_queue, access_log, echo_err, read_timeout,
                  allowed_hosts(host, allow_hosts), max_queued_megapixels)
    finally:
        sock.close()
