"""One model, one inference thread: requests queue for it instead of calling the model concurrently.

Keras models called from several threads at once are not guaranteed to be safe, and TensorFlow already
spreads one call over every core, so running images one at a time on a single thread loses little and
keeps memory bounded. Decoding uploads happens elsewhere, in parallel (see `app.py`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

log = logging.getLogger("detkit.server")

DEFAULT_MAX_QUEUE = 64
DEFAULT_READ_TIMEOUT = 30.0  # seconds for a request head, then its body, to arrive (--read-timeout)
# Decoded RGB pixels held by queued images at most (3 bytes each: 256 MP is 768 MB).
DEFAULT_MAX_QUEUED_PIXELS = 256_000_000


class DetectorLike(Protocol):
    """What the server needs of a model: class names and `predict` (as `detkit.inference.Detector`)."""

    class_names: Sequence[str]

    def predict(self, image: np.ndarray, min_prob: Optional[float] = None,
                max_detections: Optional[int] = None) -> list: ...


class QueueFull(Exception):
    """More requests are waiting for the model than the server is willing to hold."""


@dataclass
class _Job:
    image: np.ndarray
    min_prob: float
    max_detections: int
    future: Future
    pixels: int = 0  # held against the queue's pixel budget until the job is done


class InferenceQueue:
    """Runs `detector.predict` for queued images on one background thread, in arrival order."""

    def __init__(self, detector: DetectorLike, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_pixels: int = DEFAULT_MAX_QUEUED_PIXELS):
        self.detector = detector
        self.max_queue = max_queue
        self.max_pixels = max_pixels
        self._pixels = 0
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.served = 0
        self._thread = threading.Thread(target=self._run, name="detkit-inference", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Images queued or being predicted right now."""
        return self._pending

    @property
    def full(self) -> bool:
        """No room for one more image: a new request is refused before its upload is read."""
        return self._pending >= self.max_queue

    def reserve(self) -> "Slot":
        """Hold a place in the queue before decoding an upload; QueueFull when none is left."""
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull(f"server busy: {self._pending} images already waiting for the model")
            self._pending += 1
        return Slot(self)

    def submit(self, image: np.ndarray, min_prob: float, max_detections: int) -> Future:
        """Queue one image; the future's result is the detector's list of detections."""
        return self.reserve().submit(image, min_prob, max_detections)

    def _release(self, pixels: int) -> None:
        with self._lock:
            self._pending -= 1
            self._pixels -= pixels

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if job.future.set_running_or_notify_cancel():
                    start = time.perf_counter()
                    result = self.detector.predict(job.image, min_prob=job.min_prob,
                                                   max_detections=job.max_detections)
                    job.future.set_result((result, time.perf_counter() - start))
            except BaseException as exc:  # reported to the request, never kills the thread
                log.exception("inference failed")
                job.future.set_exception(exc)
            finally:
                job.image = None  # let the pixels go before waiting for the next job
                with self._lock:
                    self.served += 1
                    self._pending -= 1
                    self._pixels -= job.pixels

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued images, then stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)


class Slot:
    """One reserved place in an InferenceQueue: submitted once, or released unused."""

    def __init__(self, engine: InferenceQueue):
        self._engine: Optional[InferenceQueue] = engine
        self._pixels = 0

    def hold_pixels(self, pixels: int) -> None:
        """Count an image's pixels (from its header) against the queue's budget before decoding it; QueueFull
        when the images already waiting hold too many (one image alone is always let through)."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("queue slot already used")
        with engine._lock:
            if engine._pixels > 0 and engine._pixels + pixels > engine.max_pixels:
                raise QueueFull(f"server busy: images of {engine._pixels / 1e6:.0f} megapixels already waiting "
                                "for the model")
            engine._pixels += pixels
            self._pixels += pixels

    def submit(self, image: np.ndarray, min_prob: float, max_detections: int) -> Future:
        """Queue the image in this place; the inference thread frees it when done."""
        engine, self._engine = self._engine, None
        if engine is None:
            raise RuntimeError("queue slot already used")
        future: Future = Future()
        engine._jobs.put(_Job(image, min_prob, max_detections, future, self._pixels))
        return future

    def release(self) -> None:
        """Give the place back if no image was submitted in it (a refused upload)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine._release(self._pixels)
