"""What keeps the server usable by everyone: read deadlines (408), early 503 when busy, the Host check."""
from __future__ import annotations

import socket
import threading
import time

from server_helpers import (FakeDetector, jpeg_bytes, multipart_body, read_response, require_web_extra,
                            threaded_server)

require_web_extra()

PREDICT = "/api/fasterrcnn/predict/"


def request_head(content_length: int, content_type: str, host: str = "127.0.0.1") -> bytes:
    return (f"POST {PREDICT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {content_length}\r\n\r\n").encode()


def test_slow_upload_gets_408_and_its_connection_is_closed():
    body, kind = multipart_body(jpeg_bytes(64, 48))
    with threaded_server(FakeDetector(), read_timeout=1.0) as (host, port, _):
        with socket.create_connection((host, port)) as slow:
            slow.sendall(request_head(len(body), kind) + body[:50])
            start = time.monotonic()
            # One byte every 0.2 s: it would take minutes to finish the upload.
            stop = threading.Event()

            def trickle() -> None:
                for i in range(50, len(body) - 1):
                    if stop.wait(0.2):
                        return
                    try:
                        slow.send(body[i:i + 1])
                    except OSError:
                        return

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            answer = read_response(slow, timeout=10)
            stop.set()
            elapsed = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"--read-timeout" in answer
        assert elapsed < 5, elapsed  # answered at the deadline, and the connection closed (read_response ended)
        # A normal client is still answered.
        with socket.create_connection((host, port)) as fast:
            fast.sendall(request_head(len(body), kind) + body)
            assert read_response(fast, timeout=10).startswith(b"HTTP/1.1 200")


def test_slow_request_head_is_disconnected():
    with threaded_server(FakeDetector(), read_timeout=1.0) as (host, port, _):
        with socket.create_connection((host, port)) as slow:
            slow.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            start = time.monotonic()
            closed = False
            for i in range(40):  # one header line every 0.25 s, never the blank line ending the head
                try:
                    slow.sendall(f"X-Slow-{i}: a\r\n".encode())
                except OSError:
                    closed = True
                    break
                slow.settimeout(0.25)
                try:
                    if slow.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed = True
                    break
            elapsed = time.monotonic() - start
        assert closed and elapsed < 4, (closed, elapsed)


def test_full_queue_answers_503_before_the_upload_is_sent():
    detector = FakeDetector()
    detector.release = threading.Event()
    body, kind = multipart_body(jpeg_bytes(64, 48))
    with threaded_server(detector, max_queue=1) as (host, port, _):
        with socket.create_connection((host, port)) as first:
            first.sendall(request_head(len(body), kind) + body)
            assert detector.entered.wait(10)
            with socket.create_connection((host, port)) as second:
                # Only the head of a (declared) 20 MB upload: the answer must not wait for the body.
                second.sendall(request_head(20_000_000, kind))
                answer = read_response(second, timeout=5)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"busy" in answer
            detector.release.set()
            assert read_response(first, timeout=10).startswith(b"HTTP/1.1 200")


def test_refused_uploads_give_their_queue_place_back(make_client, fake_detector):
    client = make_client(fake_detector, max_queue=1)
    files = {"image": ("bad.jpg", b"not an image at all")}
    for _ in range(3):
        assert client.post(PREDICT, files=files).status_code == 400
    assert client.post(PREDICT, files={"image": ("a.jpg", jpeg_bytes())}).status_code == 200
    assert client.get("/api/health").json()["pending"] == 0


def test_loopback_server_refuses_other_hosts_and_origins(make_client, fake_detector):
    from detkit.server.hosts import allowed_hosts

    hosts = allowed_hosts("127.0.0.1", ("my-laptop.local",))
    assert {"127.0.0.1", "localhost", "::1", "my-laptop.local"} <= set(hosts)
    assert allowed_hosts("0.0.0.0", ()) is None and allowed_hosts("0.0.0.0", ("a.example:80",)) == ("a.example",)
    client = make_client(fake_detector, allowed_hosts=hosts)
    files = {"image": ("a.jpg", jpeg_bytes())}
    # A page on attacker.example whose name now resolves to 127.0.0.1 sends its own Host.
    refused = client.post(PREDICT, files=files, headers={"Host": "attacker.example:5000"})
    assert refused.status_code == 403 and "--allow-host" in refused.json()["error"]
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 403
    cross = client.post(PREDICT, files=files, headers={"Host": "127.0.0.1:5000", "Origin": "http://evil.example"})
    assert cross.status_code == 403 and "Origin" in cross.json()["error"]
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "my-laptop.local"):
        assert client.post(PREDICT, files=files, headers={"Host": host}).status_code == 200, host
    same_origin = client.post(PREDICT, files=files, headers={"Host": "localhost:5000",
                                                             "Origin": "http://localhost:5000"})
    assert same_origin.status_code == 200


def test_queued_images_hold_at_most_the_pixel_budget_refused_from_the_header():
    detector = FakeDetector()
    detector.release = threading.Event()
    first_body, kind = multipart_body(jpeg_bytes(200, 100))  # 20,000 pixels: over the budget alone, let in
    with threaded_server(detector, max_queue=8, max_queued_pixels=25_000) as (host, port, app):
        with socket.create_connection((host, port)) as first:
            first.sendall(request_head(len(first_body), kind) + first_body)
            assert detector.entered.wait(10)
            # 100x100 more would hold 30,000 decoded pixels: refused once its header is read, never decoded.
            body, kind = multipart_body(jpeg_bytes(100, 100))
            with socket.create_connection((host, port)) as second:
                second.sendall(request_head(len(body), kind) + body)
                answer = read_response(second, timeout=10)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"megapixels already waiting" in answer
            detector.release.set()
            assert read_response(first, timeout=10).startswith(b"HTTP/1.1 200")
        assert len(detector.calls) == 1
        # With the first image done, its pixels are given back: the same upload now goes through.
        with socket.create_connection((host, port)) as third:
            third.sendall(request_head(len(body), kind) + body)
            assert read_response(third, timeout=10).startswith(b"HTTP/1.1 200")
