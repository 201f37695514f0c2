"""Slow clients against detkit's web server on 127.0.0.1: are fast clients still answered fast? Prints JSON.

    python benchmarks/server_slow_clients.py [--slow 48] [--fast-requests 60] [--read-timeout 3]
                                             [--model-seconds 0.05] [--flood 150]

The server is detkit's app and uvicorn set-up (`detkit.server.serve.make_server`, as `detkit server web` runs
it) in a child process, around a stand-in model that sleeps `--model-seconds` per image: this measures
the server's handling of connections, not a network. Only 127.0.0.1 is ever contacted. Three phases,
each bounded in count and time:

1. baseline: `--fast-requests` uploads of a raccoon photo, one after another, nobody else connected;
2. slow: `--slow` clients open a connection and trickle an upload one byte every 0.5 s (slowloris) while
   the same fast uploads are sent; every slow client must get 408 (or be closed) at about `--read-timeout`;
3. flood: `--flood` slow clients, as many as uvicorn's connection limit (2 x --max-queue, 128): those past
   the limit get 503 and are closed, the others are held until the read timeout; the time until the first
   fast 200 bounds how long slow clients shut others out (at most about --read-timeout).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.join(REPO, "detkit", "data", "raccoon", "images", "raccoon-1.jpg")
HOST = "127.0.0.1"  # the only address this benchmark ever contacts
PREDICT = "/api/fasterrcnn/predict/"
TOTAL_TIMEOUT = 300.0
BOUNDARY = "slowclientsbenchmark"


class StandIn:
    """A model that takes `seconds` per image and finds one box."""

    class_names = ["raccoon"]

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, image, min_prob=None, max_detections=None) -> list:  # noqa: ANN001 - DetectorLike
        time.sleep(self.seconds)
        return []


def serve_child(port_file: str, read_timeout: float, model_seconds: float) -> None:
    """Child process: the server around the stand-in model, its port written to `port_file`."""
    sys.path.insert(0, REPO)
    from detkit.server.app import ServerSettings, create_app
    from detkit.server.serve import make_server

    app = create_app(StandIn(model_seconds), ServerSettings(read_timeout=read_timeout))
    sock = socket.socket()
    sock.bind((HOST, 0))
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(sock.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    make_server(app, access_log=False).run(sockets=[sock])


def upload(photo: bytes) -> bytes:
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="r.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def status_of(sock: socket.socket, timeout: float) -> Optional[int]:
    """The status code of the answer on `sock`, None if it closed (or stayed silent) without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return int(match.group(1)) if match else None


def fast_request(payload: bytes) -> tuple[Optional[int], float]:
    start = time.perf_counter()
    try:
        with socket.create_connection((HOST, PORT), timeout=30) as sock:
            sock.sendall(payload)
            status = status_of(sock, 30)
    except OSError:
        status = None
    return status, time.perf_counter() - start


def fast_phase(payload: bytes, n: int) -> dict:
    rows = [fast_request(payload) for _ in range(n)]
    ok = sorted(t for s, t in rows if s == 200)
    return {"requests": n, "answered_200": len(ok),
            "other_status": sorted({str(s) for s, _ in rows if s != 200}),
            "p50_ms": round(1000 * ok[len(ok) // 2], 1) if ok else None,
            "p95_ms": round(1000 * ok[min(len(ok) - 1, int(0.95 * len(ok)))], 1) if ok else None,
            "max_ms": round(1000 * ok[-1], 1) if ok else None}


class SlowClients:
    """`n` connections trickling one upload byte every `interval` s; records how each one ended."""

    def __init__(self, n: int, payload: bytes, interval: float = 0.5):
        self.payload, self.interval = payload, interval
        self.results: list[tuple[Optional[int], float]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.one, daemon=True) for _ in range(n)]
        self.opened = threading.Semaphore(0)

    def one(self) -> None:
        start = time.perf_counter()
        status = None
        try:
            with socket.create_connection((HOST, PORT), timeout=10) as sock:
                sock.sendall(self.payload[:200])  # the head and the start of the body
                self.opened.release()
                sock.settimeout(self.interval)
                for i in range(200, len(self.payload)):
                    if self.stop.is_set():
                        break
                    try:
                        sock.send(self.payload[i:i + 1])
                    except OSError:
                        break
                    try:
                        if sock.recv(1, socket.MSG_PEEK) is not None:
                            status = status_of(sock, 2)
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
        except OSError:
            self.opened.release()
        with self.lock:
            self.results.append((status, time.perf_counter() - start))

    def __enter__(self) -> "SlowClients":
        for thread in self.threads:
            thread.start()
        for _ in self.threads:
            self.opened.acquire(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def summary(self) -> dict:
        ended = [t for _, t in self.results]
        return {"clients": len(self.threads), "status": {str(s): sum(1 for r, _ in self.results if r == s)
                                                         for s in sorted({r for r, _ in self.results}, key=str)},
                "held_connection_s_max": round(max(ended), 2) if ended else None}


def flood_phase(payload: bytes, n_slow: int, deadline: float) -> dict:
    """Seconds from the flood until a fast client is answered 200, and what it got before."""
    with SlowClients(n_slow, payload) as slow:
        start = time.perf_counter()
        seen: dict[str, int] = {}
        first_ok = None
        while time.perf_counter() - start < deadline:
            status, _ = fast_request(payload)
            seen[str(status)] = seen.get(str(status), 0) + 1
            if status == 200:
                first_ok = time.perf_counter() - start
                break
            time.sleep(0.1)
    return {"slow_clients": n_slow, "fast_statuses_until_first_200": seen,
            "seconds_until_fast_200": round(first_ok, 2) if first_ok is not None else None,
            "slow": slow.summary()}


def main() -> None:
    global PORT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=48, help="slow clients during phase 2 (at most 120)")
    parser.add_argument("--flood", type=int, default=128, help="slow clients in phase 3 (at most 200; 0 skips)")
    parser.add_argument("--fast-requests", type=int, default=60)
    parser.add_argument("--read-timeout", type=float, default=3.0)
    parser.add_argument("--model-seconds", type=float, default=0.05)
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve, args.read_timeout, args.model_seconds)
        return
    args.slow, args.flood = min(args.slow, 120), min(args.flood, 200)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="detkit-slow-clients-")
    port_file = os.path.join(tmp, "port")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", port_file,
                              "--read-timeout", str(args.read_timeout), "--model-seconds", str(args.model_seconds)],
                             stderr=open(os.path.join(tmp, "server.log"), "wb"))
    try:
        started = time.monotonic()
        while not os.path.exists(port_file):
            if child.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit(f"server did not start; see {tmp}/server.log")
            time.sleep(0.1)
        PORT = int(open(port_file).read())
        payload = upload(open(PHOTO, "rb").read())
        while fast_request(payload)[0] != 200:  # wait until it listens
            if time.monotonic() - started > 60:
                raise SystemExit("server not answering")
            time.sleep(0.2)
        bench_start = time.monotonic()
        result = {"read_timeout_s": args.read_timeout, "model_seconds": args.model_seconds,
                  "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
        result["baseline"] = fast_phase(payload, args.fast_requests)
        with SlowClients(args.slow, payload) as slow:
            result["with_slow_clients"] = fast_phase(payload, args.fast_requests)
            while len(slow.results) < args.slow and time.monotonic() - bench_start < TOTAL_TIMEOUT / 2:
                time.sleep(0.1)
        result["with_slow_clients"]["slow"] = slow.summary()
        if args.flood:
            time.sleep(1)
            result["flood"] = flood_phase(payload, args.flood, deadline=min(60.0, 10 * args.read_timeout))
        result["seconds"] = round(time.monotonic() - bench_start, 1)
        print(json.dumps(result, indent=2))
    finally:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()


PORT = 0

if __name__ == "__main__":
    main()
