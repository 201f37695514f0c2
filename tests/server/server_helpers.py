"""Web server test helpers: a fake detector (no TensorFlow model) and image bytes."""
from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import pytest
from PIL import Image



def require_web_extra() -> None:
    """Skip a test module when the web extra (or httpx, the test client's transport) is missing."""
    for module in ("fastapi", "uvicorn", "python_multipart", "httpx"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[test]' (or '.[web]')")


@dataclass
class FakeDetection:
    """The fields and JSON form of detkit.inference.Detection, without importing the model code."""

    bbox: list
    label: str
    label_id: int
    prob: float

    def to_json(self) -> dict:
        return {"bbox": [round(v, 2) for v in self.bbox], "label": self.label, "prob": round(self.prob, 4)}


class FakeDetector:
    """Two boxes per image scaled to its size; records every call, the thread it ran on and overlaps."""

    class_names = ["raccoon", "cat"]

    def __init__(self, delay: float = 0.0, fail: Optional[Callable[[np.ndarray], bool]] = None):
        self.delay = delay
        self.fail = fail
        self.calls: list[dict] = []
        self.threads: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.entered = threading.Event()
        self.release: Optional[threading.Event] = None
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray, min_prob: Optional[float] = None,
                max_detections: Optional[int] = None) -> list:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.threads.add(threading.current_thread().name)
            self.calls.append({"shape": image.shape, "dtype": image.dtype, "min_prob": min_prob,
                               "max_detections": max_detections})
            self.entered.set()
            if self.release is not None:
                self.release.wait(10)
            if self.delay:
                time.sleep(self.delay)
            if self.fail and self.fail(image):
                raise RuntimeError("model exploded")
            h, w = image.shape[:2]
            dets = [FakeDetection([0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], "raccoon", 1, 0.9),
                    FakeDetection([0.5 * w, 0.1 * h, 0.9 * w, 0.4 * h], "cat", 2, 0.3)]
            return [d for d in dets if d.prob >= (min_prob or 0)][: max_detections or 100]
        finally:
            with self._lock:
                self.active -= 1


def jpeg_bytes(width: int = 64, height: int = 48, exif_orientation: Optional[int] = None) -> bytes:
    """A small JPEG (a gradient), optionally tagged with an EXIF orientation."""
    array = np.zeros((height, width, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    buf = io.BytesIO()
    image = Image.fromarray(array)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buf, "JPEG", exif=exif.tobytes())
    else:
        image.save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixel data: its header alone is read for the limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVING = re.compile(r"serving on (http://\S+/)")


def detkit_env() -> dict:
    """The environment for a `python -m detkit` child importing this checkout, as the test process does."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@contextlib.contextmanager
def running_server(args: list, log_path: str, timeout: float = 180.0) -> Iterator[str]:
    """`detkit server web ARGS --port 0` in a child process; yields its URL once /api/health answers."""
    import urllib.request

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "detkit", "server", "web", *args, "--port", "0"],
                                stdout=log, stderr=subprocess.STDOUT, env=detkit_env())
    try:
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
            if url is None:
                match = SERVING.search(_tail(log_path, 1_000_000))
                url = match.group(1) if match else None
            if url is not None:
                try:
                    with urllib.request.urlopen(url + "api/health", timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"server not ready after {timeout:.0f} s:\n{_tail(log_path)}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _tail(path: str, n: int = 4000) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")[-n:]


@contextlib.contextmanager
def threaded_server(detector, **settings) -> Iterator[tuple[str, int, object]]:
    """The real uvicorn server (detkit's protocol and limits) around `detector` on 127.0.0.1 in a thread.

    Yields (host, port, app); the server is stopped on exit.
    """
    import socket

    from detkit.server.app import ServerSettings, create_app
    from detkit.server.serve import make_server

    app = create_app(detector, ServerSettings(**settings))
    server = make_server(app, access_log=False, log_config=None, log_level="warning")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield "127.0.0.1", sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def multipart_body(data: bytes, field: str = "image", filename: str = "photo.jpg") -> tuple[bytes, str]:
    """A multipart/form-data body holding one file, and its content type."""
    boundary = "detkitboundary0123456789"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def read_response(sock, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection or `timeout` s pass."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
