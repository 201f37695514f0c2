"""The FastAPI application: Luminoth's predict route, health, classes, OpenAPI and the local web page.

`create_app(detector)` takes any object with `class_names` and `predict(image, min_prob=, max_detections=)`
(a `detkit.inference.Detector`, or a fake in tests); the model is never loaded here.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detkit.server.engine import (DEFAULT_MAX_QUEUE, DEFAULT_MAX_QUEUED_PIXELS, DEFAULT_READ_TIMEOUT, DetectorLike,
                                  InferenceQueue, QueueFull)
from detkit.server.guards import HostCheck, QueueGate, ReadDeadline
from detkit.server.uploads import Limits, UploadError, check_size, decode_image, human_bytes, pixel_count
from detkit.version import __version__

log = logging.getLogger("detkit.server")

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
PREDICT_ROUTE = "/api/fasterrcnn/predict/"  # Luminoth's route: its clients keep working
# Room for the multipart boundaries, headers and the small form fields around the image itself.
MULTIPART_SLACK = 64 * 1024
MAX_DETECTIONS_CAP = 10_000
# The page loads nothing from outside this server (the browser enforces it) and is not framed elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class ServerSettings:
    """Defaults and limits of one server; every field has a CLI option."""

    min_prob: float = 0.5
    max_detections: int = 100
    limits: Limits = field(default_factory=Limits)
    workers: int = 2  # threads decoding uploads at once; inference always runs on one thread
    max_queue: int = DEFAULT_MAX_QUEUE
    max_queued_pixels: int = DEFAULT_MAX_QUEUED_PIXELS  # decoded pixels of the images waiting, at most
    model_name: str = "model"
    read_timeout: float = DEFAULT_READ_TIMEOUT  # seconds for a request body to arrive, then 408
    # Host names the server answers to (Host and Origin headers); None answers any (see guards.HostCheck).
    allowed_hosts: Optional[tuple[str, ...]] = None


# ------------------------------------------------------------------------------------------- schemas
class DetectedObject(BaseModel):
    """One detection in pixels of the upright image."""

    bbox: list[float] = Field(description="xmin, ymin, xmax, ymax in pixels")
    label: str
    prob: float


class PredictResponse(BaseModel):
    """Luminoth's answer (`objects`) plus the image size and the time spent."""

    objects: list[DetectedObject]
    width: int
    height: int
    seconds: float = Field(description="server time for this request after the upload arrived")
    inference_seconds: float = Field(description="time in the model alone")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: str


class ClassesResponse(BaseModel):
    """The model's class names, in label order (label 1 first)."""

    classes: list[str]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "missing field, not an image, truncated file, bad parameter"},
    403: {"model": ErrorResponse, "description": "Host or Origin header naming another machine (loopback server)"},
    408: {"model": ErrorResponse, "description": "the upload did not arrive within the read timeout"},
    413: {"model": ErrorResponse, "description": "upload over the byte or megapixel limit"},
    503: {"model": ErrorResponse, "description": "too many images already waiting for the model"},
}


# ------------------------------------------------------------------------------------------- body limit
class BodyLimit:
    """Refuse request bodies over `max_body` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            # Answer before reading a byte of the body.
            await JSONResponse({"error": self._message(int(declared))}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # An HTTPException goes through FastAPI's body parsing untouched to our JSON handler.
                    raise HTTPException(413, self._message(received, partial=True))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int, partial: bool = False) -> str:
        what = f"more than {human_bytes(size)}" if partial else human_bytes(size)
        return f"request too large: {what} (limit {human_bytes(self.max_body - MULTIPART_SLACK)} of image)"


# ------------------------------------------------------------------------------------------- errors
def _validation_message(exc: RequestValidationError) -> str:
    """'image: Field required; min_prob: Input should be ...' from pydantic's error list."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form")]
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "missing field (send the image as multipart/form-data field 'image')" if loc == ["image"] \
                else "missing field"
        parts.append(f"{'.'.join(loc) or 'request'}: {msg}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    """Every error answers {"error": "..."} as JSON, as Luminoth's API did."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the server goes on.
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=400)


# ------------------------------------------------------------------------------------------- the app
def create_app(detector: DetectorLike, settings: Optional[ServerSettings] = None) -> FastAPI:
    """The web app around an already loaded detector; one inference thread is started for it."""
    settings = settings or ServerSettings()
    engine = InferenceQueue(detector, max_queue=settings.max_queue, max_pixels=settings.max_queued_pixels)
    decoders = ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="detkit-decode")
    class_names = list(detector.class_names)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()
        decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="detkit",
        version=__version__,
        description="Faster R-CNN object detection. Upload an image to "
                    f"`{PREDICT_ROUTE}` (multipart field `image`) and get its boxes, labels and scores.",
        # Swagger UI and ReDoc load their scripts from a CDN; the page must work offline, so only the
        # OpenAPI document itself is served (/openapi.json).
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    # Innermost first: the last added sees a request first.
    app.add_middleware(BodyLimit, max_body=settings.limits.max_bytes + MULTIPART_SLACK)
    app.add_middleware(ReadDeadline, timeout=settings.read_timeout)
    app.add_middleware(QueueGate, paths=(PREDICT_ROUTE, PREDICT_ROUTE.rstrip("/")), is_full=lambda: engine.full)
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    _install_error_handlers(app)

    async def predict(
        image: UploadFile = File(..., description="the image file (JPEG, PNG, BMP, GIF, TIFF, WebP)"),
        min_prob: Optional[float] = Form(None, ge=0.0, le=1.0,
                                         description=f"score threshold (default {settings.min_prob})"),
        max_detections: Optional[int] = Form(None, ge=1, le=MAX_DETECTIONS_CAP,
                                             description=f"at most this many objects "
                                                         f"(default {settings.max_detections})"),
        total: Optional[int] = Query(None, ge=1, le=MAX_DETECTIONS_CAP, include_in_schema=False),
    ) -> Any:
        """Detect objects in one uploaded image."""
        start = time.perf_counter()
        try:
            # The place in the queue is taken before decoding: at most max_queue decoded images exist, holding
            # at most max_queued_pixels (see hold_pixels below).
            slot = engine.reserve()
        except QueueFull as exc:
            await image.close()
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        try:
            try:
                data = await image.read(settings.limits.max_bytes + 1)
            finally:
                await image.close()
            # UploadFile.size is the whole file; `data` stops one byte past the limit.
            check_size(max(len(data), getattr(image, "size", None) or 0), settings.limits)
            # The header's size counts against the queue's pixel budget before the pixels are decoded.
            slot.hold_pixels(pixel_count(data, settings.limits))
            loop = asyncio.get_running_loop()
            pixels = await loop.run_in_executor(decoders, decode_image, data, settings.limits)
            del data
            limit = max_detections or total or settings.max_detections  # `total`: Luminoth's query parameter
            future = slot.submit(pixels, settings.min_prob if min_prob is None else min_prob, limit)
        except UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except QueueFull as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        finally:
            slot.release()  # a no-op once the image is queued: the inference thread frees the place
        height, width = pixels.shape[:2]
        del pixels
        try:
            detections, inference_seconds = await asyncio.wrap_future(future)
        except Exception as exc:  # a model failure answers this request only; the server goes on
            return JSONResponse({"error": f"inference failed: {type(exc).__name__}: {exc}"}, status_code=500)
        return {
            "objects": [d.to_json() for d in detections],
            "width": int(width),
            "height": int(height),
            "seconds": round(time.perf_counter() - start, 4),
            "inference_seconds": round(inference_seconds, 4),
        }

    app.post(PREDICT_ROUTE, response_model=PredictResponse, responses=ERRORS, tags=["predict"],
             summary="Detect objects in an image")(predict)
    # Without the slash too: a 307 redirect would make some clients drop or resend the upload.
    app.post(PREDICT_ROUTE.rstrip("/"), response_model=PredictResponse, responses=ERRORS,
             include_in_schema=False)(predict)

    @app.get("/api/health", tags=["info"], summary="Liveness, model and queue state")
    async def health() -> dict:
        """The server is up and its model loaded (it is loaded before the server listens)."""
        return {
            "status": "ok",
            "version": __version__,
            "model": settings.model_name,
            "classes": len(class_names),
            "pending": engine.pending,
            "served": engine.served,
            "min_prob": settings.min_prob,
            "max_detections": settings.max_detections,
            "max_upload_bytes": settings.limits.max_bytes,
            "max_pixels": settings.limits.max_pixels,
            "max_queue": settings.max_queue,
            "max_queued_megapixels": settings.max_queued_pixels / 1e6,
            "read_timeout": settings.read_timeout,
        }

    @app.get("/api/classes", response_model=ClassesResponse, tags=["info"], summary="The model's class names")
    async def classes() -> dict:
        """Class names in label order."""
        return {"classes": class_names}

    @app.get(PREDICT_ROUTE, include_in_schema=False)
    async def predict_page() -> RedirectResponse:
        """Luminoth served its page here; send browsers to ours."""
        return RedirectResponse("/")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(os.path.join(PAGE_DIR, "index.html"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")
    return app
