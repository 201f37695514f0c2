"""`detkit train --local-workers N`: N worker processes on this machine, each with a generated TF_CONFIG.

The workers run the ordinary `detkit train` with TF_CONFIG set, exactly as nodes of a real cluster would; this
module only starts them, prefixes their output, and stops them all when one fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Optional, Sequence

from detkit.errors import ConfigError, DetkitError, Terminated

STOP_GRACE_SECONDS = 18.0  # schedulers give 30 s or so between SIGTERM and SIGKILL


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)  # held open until all are chosen, so no port is handed out twice
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_configs(num_workers: int, host: str = "127.0.0.1", ports: Optional[Sequence[int]] = None) -> list[str]:
    """One TF_CONFIG JSON per worker: the same cluster, each its own task index (worker 0 is the chief)."""
    if num_workers < 1:
        raise ConfigError(f"option --local-workers: must be >= 1, got {num_workers}")
    ports = list(ports) if ports is not None else free_ports(num_workers, host)
    cluster = {"worker": [f"{host}:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(num_workers)]


def _pump(stream: IO[bytes], prefix: bytes, out: IO[bytes], lock: threading.Lock, last: list) -> None:
    """Copy a worker's output line by line with its prefix; progress-bar updates (\\r) keep theirs."""
    buffer = b""
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            piece, sep, buffer = buffer[:cut], buffer[cut:cut + 1], buffer[cut + 1:]
            if not piece.strip():
                continue  # blank lines and bare carriage returns carry nothing worth a prefix
            with lock:
                if piece.strip():
                    last[0] = piece.strip()
                out.write(prefix + piece + sep)
                out.flush()
    if buffer:
        with lock:
            last[0] = buffer.strip() or last[0]
            out.write(prefix + buffer + b"\n")
            out.flush()


def run_local_workers(num_workers: int, worker_args: Sequence[str], kill_grace_seconds: float = 10.0,
                      environ: Optional[dict] = None, command: Optional[Sequence[str]] = None) -> int:
    """Run `python -m detkit <worker_args>` as N workers; return 0, or raise DetkitError naming the failed one."""
    command = list(command) if command is not None else [sys.executable, "-m", "detkit"]
    configs = tf_configs(num_workers)
    base_env = dict(os.environ if environ is None else environ)
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    lock = threading.Lock()
    lasts: list[list] = []
    stdout = sys.stdout.buffer
    stderr = sys.stderr.buffer
    previous = _terminate_on_sigterm()
    try:
        for index, tf_config in enumerate(configs):
            env = dict(base_env, TF_CONFIG=tf_config)
            proc = subprocess.Popen([*command, *worker_args], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            procs.append(proc)
            last = [b""]
            lasts.append(last)
            prefix = f"[worker {index}] ".encode()
            # The chief's stdout (the run directory) passes through unprefixed: it is the command's result.
            out_target = stdout if index == 0 else stderr
            # Only stderr's last line explains a failure (detkit's one-line error or a traceback's last line).
            for stream, target, pre, keep in ((proc.stdout, out_target, b"" if index == 0 else prefix, [b""]),
                                              (proc.stderr, stderr, prefix, last)):
                t = threading.Thread(target=_pump, args=(stream, pre, target, lock, keep), daemon=True)
                t.start()
                threads.append(t)
        failed = _wait_all(procs)
        if failed is not None:
            index, code = failed
            for t in threads[2 * index:2 * index + 2]:
                t.join(timeout=5)  # the failed worker's pipes close with it: read its last words first
            _stop(procs, kill_grace_seconds)
            for t in threads:
                t.join(timeout=2)
            reason = lasts[index][0].decode(errors="replace")[:200]
            raise DetkitError(f"local worker {index} of {num_workers} exited with code {code}"
                              + (f": {reason}" if reason else "") + "; stopped the other workers")
        for t in threads:
            t.join(timeout=5)
        return 0
    except KeyboardInterrupt as exc:
        # The workers run in their own sessions (so a failure can stop them as a group): pass Ctrl-C or
        # SIGTERM on, so each saves its checkpoint at the same step as in a single-process run.
        if isinstance(exc, Terminated):  # preempted: the workers finish their step and save, within 20 s
            _stop(procs, max(kill_grace_seconds, STOP_GRACE_SECONDS), first=signal.SIGTERM)
        else:
            _stop(procs, kill_grace_seconds, first=signal.SIGINT)
        for t in threads:
            t.join(timeout=2)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_on_sigterm():  # noqa: ANN202 - a signal handler or None
    """Turn SIGTERM into errors.Terminated in the main thread; the previous handler, or None elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: object) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, on_term)


def train_with_local_workers(num_workers: int, config_files: Sequence[str], overrides: Sequence[str], run_name: str,
                             kill_grace_seconds: float = 10.0, verbose: bool = False, from_scratch: bool = False) -> None:
    """`detkit train` with the same -c/-o as N local multi-worker processes; ConfigError for what cannot work."""
    if num_workers < 1:
        raise ConfigError(f"option --local-workers: must be >= 1, got {num_workers}")
    if not run_name:
        raise ConfigError("config key train.run_name: required with --local-workers "
                          "(every worker must name the same run directory)")
    if os.environ.get("TF_CONFIG", "").strip():
        raise ConfigError("option --local-workers: TF_CONFIG is already set; unset it, or run without "
                          "--local-workers to join that cluster")
    args = (["train"] + [a for f in config_files for a in ("-c", f)] + [a for o in overrides for a in ("-o", o)]
            + (["--from-scratch"] if from_scratch else []))
    if "train.strategy" not in " ".join(overrides):
        args += ["-o", "train.strategy=multi_worker"]
    run_local_workers(num_workers, (["-v"] if verbose else []) + args, kill_grace_seconds)


def _wait_all(procs: list[subprocess.Popen]) -> Optional[tuple[int, int]]:
    """Wait until every worker has exited (None) or one has failed ((index, exit code))."""
    while True:
        running = False
        for index, proc in enumerate(procs):
            code = proc.poll()
            if code is None:
                running = True
            elif code != 0:
                return index, code
        if not running:
            return None
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], grace_seconds: float, first: int = signal.SIGTERM) -> None:
    """Signal the workers still running (each is its own process group), SIGKILL them after the grace time."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, first)
            except ProcessLookupError:
                pass
    deadline = time.time() + grace_seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
