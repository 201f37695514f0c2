"""Load test of `detkit server web` on 127.0.0.1: prints one JSON object (requests/s, latency, memory, correctness).

    python benchmarks/server_load.py [--checkpoint RUN_DIR|CKPT|FILE.tar] [--requests 200] [--clients 8]

It starts the server itself, bound to 127.0.0.1 on a free port, and sends it traffic only there: first one
request per photo, one at a time, to record the reference answers; then `--requests` requests from
`--clients` concurrent clients, one in four of them invalid (not an image, truncated JPEG, empty file,
missing field, min_prob out of range, a file over the byte limit, an image over the megapixel limit).
Every valid answer must equal its reference (same boxes, scores, size); every invalid one must be the
expected 4xx with a JSON error. The server's resident memory is sampled throughout. The traffic is bounded
in count and time; the server is stopped at the end. Exit code 1 if any answer was wrong.

Without --checkpoint it first trains a tiny CPU model (6 steps, about 15 s, as benchmarks/predict.py does):
its speed is that of a tiny network, not of a real ResNet-50 detector.
"""
from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import os
import platform
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(REPO, "detkit", "data", "raccoon", "images")
HOST = "127.0.0.1"  # the only address this benchmark ever sends to
PREDICT = "/api/fasterrcnn/predict/"
MAX_UPLOAD_MB = 2  # the server's byte limit here, so the oversized upload stays small
REQUEST_TIMEOUT = 120.0
TOTAL_TIMEOUT = 900.0


# ------------------------------------------------------------------------------------------- payloads
def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type (fields: name -> str, files: name -> (filename, bytes))."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def invalid_requests(photo: bytes) -> list[tuple[str, bytes, str, int]]:
    """(kind, body, content type, expected status) for each kind of bad request."""
    cases = [
        ("not_an_image", *multipart({}, {"image": ("notes.txt", b"just some text\n" * 50)}), 400),
        ("truncated_jpeg", *multipart({}, {"image": ("cut.jpg", photo[: len(photo) // 3])}), 400),
        ("empty_file", *multipart({}, {"image": ("empty.jpg", b"")}), 400),
        ("missing_field", *multipart({"min_prob": "0.5"}, {}), 400),
        ("bad_min_prob", *multipart({"min_prob": "7"}, {"image": ("a.jpg", photo)}), 400),
        ("over_byte_limit", *multipart({}, {"image": ("big.jpg", photo + b"\0" * (MAX_UPLOAD_MB * 2 ** 20))}), 413),
        ("over_pixel_limit", *multipart({}, {"image": ("huge.png", png_header_only(10_000, 8_000))}), 413),
    ]
    return [(kind, body, ctype, status) for kind, body, ctype, status in cases]


# ------------------------------------------------------------------------------------------- server
def rss_mb(pid: int) -> Optional[float]:
    """Resident memory of a process in MB (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_server(checkpoint: str, workers: int, log_path: str) -> tuple[subprocess.Popen, int]:
    """`detkit server web` on 127.0.0.1 and a free port; returns the process and the port once healthy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detkit", "server", "web", "--checkpoint", checkpoint, "--host", HOST,
             "--port", "0", "--workers", str(workers), "--max-upload-mb", str(MAX_UPLOAD_MB), "--no-access-log"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{open(log_path, encoding='utf-8').read()}")
        match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", open(log_path, encoding="utf-8").read())
        if match:
            port = int(match.group(1))
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/api/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return proc, port
            except OSError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready after 300 s")


class Client:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, port: int):
        self.port = port
        self.conn: Optional[http.client.HTTPConnection] = None

    def post(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            try:
                self.conn.request("POST", PREDICT, body=body, headers={"Content-Type": content_type})
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                # A kept-alive connection the server had just closed: retry once on a new one.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run dir, checkpoint prefix or packed .tar (default: train a tiny run)")
    parser.add_argument("--requests", type=int, default=200, help="requests of the load phase (max 2000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (max 32)")
    parser.add_argument("--photos", type=int, default=12, help="distinct raccoon photos in the traffic")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    args = parser.parse_args()
    # Bounded traffic: this is a benchmark, not a flood.
    n_requests = max(1, min(args.requests, 2000))
    n_clients = max(1, min(args.clients, 32))

    from PIL import Image, ImageOps

    names = sorted(os.listdir(PHOTOS), key=lambda n: int(re.sub(r"\D", "", n) or 0))[: args.photos]
    photos = []
    for name in names:
        with open(os.path.join(PHOTOS, name), "rb") as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as im:
            size = ImageOps.exif_transpose(im).size
        photos.append((name, data, size))

    with tempfile.TemporaryDirectory(prefix="detkit-server-load-") as workdir:
        trained = args.checkpoint is None
        checkpoint = args.checkpoint
        if trained:
            path = os.path.join(REPO, "benchmarks", "predict.py")
            spec = importlib.util.spec_from_file_location("bench_predict", path)
            bench_predict = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench_predict)
            from detkit.utils.tf_quiet import import_tensorflow

            import_tensorflow()
            checkpoint = bench_predict.train_tiny_run(workdir)
        log_path = os.path.join(workdir, "server.log")
        start = time.perf_counter()
        proc, port = start_server(checkpoint, args.workers, log_path)
        startup_seconds = time.perf_counter() - start
        try:
            result = run_load(proc.pid, port, photos, n_requests, n_clients)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        result.update({
            "checkpoint": "tiny run trained by this benchmark" if trained else checkpoint,
            "trained_tiny_run": trained,
            "server_startup_seconds": round(startup_seconds, 1),
            "server_workers": args.workers,
            "server_max_upload_mb": MAX_UPLOAD_MB,
            "server_exit_code": proc.returncode,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        })
    print(json.dumps(result, indent=2))
    sys.stdout.flush()
    sys.exit(0 if result["all_correct"] else 1)


def run_load(pid: int, port: int, photos: list, n_requests: int, n_clients: int) -> dict:
    """Reference pass, then the concurrent mixed traffic; the measurements as a dict."""
    rss_ready = rss_mb(pid)
    valid = []
    client = Client(port)
    for name, data, size in photos:
        body, ctype = multipart({"min_prob": "0.1"}, {"image": (name, data)})
        status, raw = client.post(body, ctype)
        answer = json.loads(raw)
        if status != 200 or [answer["width"], answer["height"]] != list(size):
            raise SystemExit(f"reference request for {name} failed: {status} {raw[:300]!r}")
        valid.append((name, body, ctype, answer["objects"], size))
    client.close()
    invalid = invalid_requests(photos[0][1])
    # Every 4th request is invalid, cycling through the kinds; the rest cycle through the photos.
    plan = [("invalid", invalid[(i // 4) % len(invalid)]) if i % 4 == 3 else ("valid", valid[i % len(valid)])
            for i in range(n_requests)]
    rss_warm = rss_mb(pid)

    samples: list[float] = []
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.is_set():
            value = rss_mb(pid)
            if value is not None:
                samples.append(value)
            stop.wait(0.1)

    monitor = threading.Thread(target=sample_memory, daemon=True)
    monitor.start()
    lock = threading.Lock()
    next_index = [0]
    records: list[dict] = []
    quarters: list[Optional[float]] = []  # RSS after each quarter of the requests: flat, or growing?
    deadline = time.monotonic() + TOTAL_TIMEOUT

    def worker() -> None:
        conn = Client(port)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if next_index[0] >= len(plan):
                        return
                    kind, item = plan[next_index[0]]
                    next_index[0] += 1
                body, ctype = item[1], item[2]
                t0 = time.perf_counter()
                try:
                    status, raw = conn.post(body, ctype)
                except OSError as exc:
                    status, raw = -1, repr(exc).encode()
                latency = time.perf_counter() - t0
                records.append({"kind": kind, "what": item[0], "ok": check(kind, item, status, raw),
                                "status": status, "seconds": latency})
                if len(records) % max(1, len(plan) // 4) == 0:
                    quarters.append(rss_mb(pid))
        finally:
            conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(n_clients) as pool:
        for future in [pool.submit(worker) for _ in range(n_clients)]:
            future.result()
    wall = time.perf_counter() - start
    stop.set()
    monitor.join()
    rss_end = rss_mb(pid)

    def latency_stats(rows: list[dict]) -> dict:
        values = [r["seconds"] for r in rows]
        if not values:
            return {}
        return {"p50_ms": round(1000 * percentile(values, 50), 1), "p95_ms": round(1000 * percentile(values, 95), 1),
                "max_ms": round(1000 * max(values), 1)}

    valid_rows = [r for r in records if r["kind"] == "valid"]
    invalid_rows = [r for r in records if r["kind"] == "invalid"]
    wrong = [{k: r[k] for k in ("what", "status")} for r in records if not r["ok"]]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "benchmark": "server_load",
        "target": f"http://{HOST}:{port}{PREDICT}",
        "requests": len(records),
        "planned_requests": n_requests,
        "clients": n_clients,
        "seconds": round(wall, 2),
        "requests_per_second": round(len(records) / wall, 2),
        "latency": latency_stats(records),
        "latency_valid": latency_stats(valid_rows),
        "latency_invalid": latency_stats(invalid_rows),
        "valid_sent": len(valid_rows),
        "valid_correct": sum(r["ok"] for r in valid_rows),
        "invalid_sent": len(invalid_rows),
        "invalid_got_expected_4xx": sum(r["ok"] for r in invalid_rows),
        "status_counts": statuses,
        "wrong": wrong[:20],
        "all_correct": not wrong and len(records) == n_requests,
        "rss_mb": {
            "ready": _round(rss_ready),
            "after_reference_pass": _round(rss_warm),
            "peak_during_load": _round(max(samples) if samples else None),
            "after_each_quarter": [_round(v) for v in quarters],
            "end": _round(rss_end),
            "growth_during_load": _round(rss_end - rss_warm if rss_end and rss_warm else None),
        },
    }


def check(kind: str, item: tuple, status: int, raw: bytes) -> bool:
    """A valid request's answer equals its reference; an invalid one has the expected 4xx and a JSON error."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return False
    if kind == "valid":
        _, _, _, reference, size = item
        return status == 200 and answer["objects"] == reference and [answer["width"], answer["height"]] == list(size)
    return status == item[3] and isinstance(answer.get("error"), str) and bool(answer["error"])


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 1)


if __name__ == "__main__":
    main()
