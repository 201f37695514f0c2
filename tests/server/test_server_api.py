"""The web API through FastAPI's test client, around a fake detector: answers, bad input, limits, queueing."""
from __future__ import annotations

import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from server_helpers import FakeDetector, jpeg_bytes, png_header_only, require_web_extra

require_web_extra()

PREDICT = "/api/fasterrcnn/predict/"


def post_image(client, data: bytes, name: str = "photo.jpg", field: str = "image", **form):
    return client.post(PREDICT, files={field: (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in form.items()})


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    for word in words:
        assert word in body["error"], body


def test_predict_answers_luminoth_objects_with_size_and_time(client, fake_detector):
    response = post_image(client, jpeg_bytes(80, 60))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["width"] == 80 and body["height"] == 60
    assert body["seconds"] >= body["inference_seconds"] >= 0
    # The server default min_prob (0.5) dropped the 0.3 box.
    assert body["objects"] == [{"bbox": [8.0, 12.0, 48.0, 54.0], "label": "raccoon", "prob": 0.9}]
    call = fake_detector.calls[-1]
    assert call["shape"] == (60, 80, 3) and call["dtype"] == np.uint8
    assert call["min_prob"] == 0.5 and call["max_detections"] == 100


def test_min_prob_and_max_detections_from_the_form_or_luminoth_total(client, fake_detector):
    body = post_image(client, jpeg_bytes(), min_prob=0, max_detections=5).json()
    assert [o["label"] for o in body["objects"]] == ["raccoon", "cat"]
    assert fake_detector.calls[-1]["min_prob"] == 0 and fake_detector.calls[-1]["max_detections"] == 5
    response = client.post(PREDICT + "?total=1", files={"image": ("a.jpg", jpeg_bytes())}, data={"min_prob": "0"})
    assert len(response.json()["objects"]) == 1


def test_route_without_trailing_slash_answers_directly(client):
    response = client.post(PREDICT.rstrip("/"), files={"image": ("a.jpg", jpeg_bytes())}, follow_redirects=False)
    assert response.status_code == 200


def test_exif_orientation_is_applied_before_the_model(client, fake_detector):
    # Orientation 6: stored 80 wide x 60 high, shown (and predicted) 60 wide x 80 high.
    body = post_image(client, jpeg_bytes(80, 60, exif_orientation=6)).json()
    assert (body["width"], body["height"]) == (60, 80)
    assert fake_detector.calls[-1]["shape"] == (80, 60, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_grey_alpha_palette_and_16_bit_pngs_reach_the_model_as_rgb(client, fake_detector, mode):
    buf = io.BytesIO()
    Image.new(mode, (30, 20)).save(buf, "PNG")
    response = post_image(client, buf.getvalue(), "x.png")
    assert response.status_code == 200, response.text
    assert fake_detector.calls[-1]["shape"] == (20, 30, 3)


def test_health_classes_and_openapi(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["classes"] == 2 and health["min_prob"] == 0.5
    assert health["max_upload_bytes"] == 20 * 1024 * 1024 and health["max_pixels"] == 50_000_000
    assert client.get("/api/classes").json() == {"classes": ["raccoon", "cat"]}
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][PREDICT]["post"]
    assert {"400", "413", "200"} <= set(operation["responses"])
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"/api/health", "/api/classes"} <= set(schema["paths"])


BAD_REQUESTS = {
    "not an image": (lambda c: post_image(c, b"hello, I am text\n" * 20, "notes.txt"), "not an image"),
    "truncated JPEG": (lambda c: post_image(c, jpeg_bytes(200, 150)[:700]), "cannot decode"),
    "empty file": (lambda c: post_image(c, b""), "empty"),
    "missing image field": (lambda c: c.post(PREDICT, data={"min_prob": "0.5"}), "image"),
    "image under another name": (lambda c: post_image(c, jpeg_bytes(), field="file"), "image"),
    "empty body": (lambda c: c.post(PREDICT), "image"),
    "raw bytes, not multipart": (lambda c: c.post(PREDICT, content=jpeg_bytes(),
                                                  headers={"content-type": "image/jpeg"}), "image"),
    "broken multipart": (lambda c: c.post(PREDICT, content=b"--xx\r\nnonsense",
                                          headers={"content-type": "multipart/form-data; boundary=xx"}), ""),
    "min_prob above 1": (lambda c: post_image(c, jpeg_bytes(), min_prob=1.5), "min_prob"),
    "min_prob below 0": (lambda c: post_image(c, jpeg_bytes(), min_prob=-0.1), "min_prob"),
    "min_prob not a number": (lambda c: post_image(c, jpeg_bytes(), min_prob="abc"), "min_prob"),
    "max_detections 0": (lambda c: post_image(c, jpeg_bytes(), max_detections=0), "max_detections"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_400_with_a_json_error_and_the_server_goes_on(client, fake_detector, case):
    send, word = BAD_REQUESTS[case]
    assert_error(send(client), 400, word)
    assert not fake_detector.calls  # nothing bad reached the model
    assert post_image(client, jpeg_bytes()).status_code == 200


def test_upload_over_the_byte_limit_is_413_before_decoding(make_client, fake_detector):
    client = make_client(fake_detector, max_bytes=10_000)
    big = jpeg_bytes(16, 16) + b"\0" * 20_000  # a valid JPEG with trailing bytes: only the size is wrong
    assert_error(post_image(client, big), 413, "too large")
    # Far over the limit: refused from Content-Length, before the body is read.
    assert_error(post_image(client, b"\0" * 300_000), 413, "too large")
    # Streamed without Content-Length (chunked): refused while reading.
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n\r\n".encode()
            + b"\0" * 300_000 + f"\r\n--{boundary}--\r\n".encode())
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = client.post(PREDICT, content=chunks, headers=headers)
    assert_error(response, 413, "too large")
    assert not fake_detector.calls
    assert post_image(client, jpeg_bytes()).status_code == 200


def test_image_over_the_pixel_limit_is_413_from_its_header(client, make_client, fake_detector):
    # 60 megapixels declared in a 57-byte file: refused without decoding (the default limit is 50 MP).
    assert_error(post_image(client, png_header_only(10_000, 6_000), "huge.png"), 413, "megapixels")
    # Beyond Pillow's own decompression-bomb guard as well, even with a generous server limit.
    generous = make_client(fake_detector, max_pixels=10**12)
    assert_error(post_image(generous, png_header_only(20_000, 20_000), "bomb.png"), 413, "too large")
    small_limit = make_client(fake_detector, max_pixels=1000)
    assert_error(post_image(small_limit, jpeg_bytes(40, 40)), 413, "megapixels")
    assert not fake_detector.calls


def test_model_failure_is_a_json_500_and_the_next_request_works(make_client):
    detector = FakeDetector(fail=lambda image: image.shape[1] == 33)
    client = make_client(detector)
    assert_error(post_image(client, jpeg_bytes(33, 20)), 500, "model exploded")
    assert post_image(client, jpeg_bytes(34, 20)).status_code == 200


def test_concurrent_requests_share_one_model_on_one_thread(make_client):
    detector = FakeDetector(delay=0.02)
    client = make_client(detector, workers=4)
    sizes = [(20 + i, 30 + i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda wh: post_image(client, jpeg_bytes(*wh), min_prob=0), sizes))
    assert [r.status_code for r in responses] == [200] * 16
    # Every answer is for its own image, the model never ran two images at once, always on one thread.
    assert [(r.json()["width"], r.json()["height"]) for r in responses] == sizes
    assert detector.max_active == 1 and detector.threads == {"detkit-inference"}
    assert client.get("/api/health").json()["served"] == 16


def test_full_queue_answers_503_and_recovers(make_client):
    detector = FakeDetector()
    detector.release = threading.Event()
    client = make_client(detector, max_queue=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post_image, client, jpeg_bytes())
        assert detector.entered.wait(10)
        assert_error(post_image(client, jpeg_bytes()), 503, "busy")
        detector.release.set()
        assert first.result(timeout=10).status_code == 200
    assert post_image(client, jpeg_bytes()).status_code == 200


def test_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert references and all(ref.startswith(("/", "data:", "#")) and not ref.startswith("//") for ref in references)
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.text) > 500
        assert not re.search(r"https?://", response.text), asset
    # Luminoth served its page at the predict route: browsers are sent to ours.
    assert client.get(PREDICT, follow_redirects=False).headers["location"] == "/"


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/nope"), 404, "Not Found")


def test_corrupted_images_never_crash_the_server(client, fake_detector):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    originals = [jpeg_bytes(40, 30), buf.getvalue()]
    for i in range(40):
        data = bytearray(originals[i % 2])
        cut = int(rng.integers(8, len(data)))
        for pos in rng.integers(0, cut, size=int(rng.integers(1, 12))):
            data[pos] = int(rng.integers(0, 256))
        response = post_image(client, bytes(data[:cut] if i % 3 == 0 else data))
        assert response.status_code in (200, 400), (i, response.status_code, response.text)
        assert response.json()["objects" if response.status_code == 200 else "error"] is not None
    assert client.get("/api/health").json()["status"] == "ok"


def test_nan_min_prob_is_refused(client):
    assert_error(post_image(client, jpeg_bytes(), min_prob="nan"), 400, "min_prob")
