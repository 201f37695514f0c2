"""Prediction over many inputs: images read ahead in threads and batched, videos frame by frame, JSON records
and drawn copies. `detkit predict` is a thin command over `predict_items`.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from detkit import inputs
from detkit.errors import DetkitError
from detkit.utils.atomic import save_image
from detkit.utils.draw import draw_detections
from detkit.utils.progress import progress

# More inputs than this get a progress bar.
PROGRESS_MIN_ITEMS = 3
# Images decoded ahead of the model, per batch slot.
READ_AHEAD = 4
# In a -d folder: the files detkit predict drew there, one name per line (only those are ever replaced).
DRAWN_MARKER = ".detkit-drawn"


def _warn(message: str) -> None:
    """A warning line on stderr that does not break an active progress bar."""
    tqdm.write(f"detkit: warning: {message}", file=sys.stderr)


class BatchPredictor:
    """`Detector.predict` with fixed filters and `batch_size` images per model call (see `Detector.predict`)."""

    def __init__(self, detector, batch_size: int, min_prob: float, max_detections: int,
                 only_classes: Optional[list[str]], ignore_classes: Optional[list[str]]):
        self.detector = detector
        self.batch_size = max(1, batch_size)
        self.min_prob = min_prob
        self.max_detections = max_detections
        self.only = only_classes
        self.ignore = ignore_classes

    def __call__(self, images: list) -> list[list]:
        """One list of detections per image."""
        return self.detector.predict(list(images), min_prob=self.min_prob, max_detections=self.max_detections,
                                     only_classes=self.only, ignore_classes=self.ignore,
                                     batch_size=self.batch_size)


def _read_ahead(items: list, read, workers: int, window: int) -> Iterator[tuple]:
    """(item, result or exception) in order, decoding up to `window` items ahead in threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        iterator = iter(items)
        for item in iterator:
            pending.append((item, pool.submit(read, item.path)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(iterator, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt.path)))
            try:
                yield item, future.result()
            except inputs.UnreadableInput as exc:
                yield item, exc


class DrawnNames:
    """Output paths for drawn copies: the input's path relative to its folder/glob, made unique.

    A drawn copy never replaces an input image, nor a file this command did not write: the folder's
    `.detkit-drawn` lists the files earlier runs drew there (those are replaced); any other existing file
    keeps its name and the drawn copy gets a free one (`photo-1.jpg`), counted in `renamed`.
    """

    def __init__(self, directory: str, inputs_paths: Iterable[str] = ()):
        self.directory = directory
        self.used: set[str] = set()
        self.inputs = {os.path.realpath(p) for p in inputs_paths}
        self.marker = os.path.join(directory, DRAWN_MARKER)
        try:
            with open(self.marker, encoding="utf-8") as fh:
                self.made = {line.rstrip("\n") for line in fh if line.strip()}
        except OSError:
            self.made = set()
        self.renamed: list[str] = []

    def _free(self, name: str) -> bool:
        path = os.path.join(self.directory, name)
        if name in self.used or os.path.realpath(path) in self.inputs:
            return False
        return not os.path.lexists(path) or name in self.made

    def path_for(self, item: inputs.InputItem, ext: Optional[str] = None) -> str:
        """The path for `item`'s drawn copy, recorded in the folder's list of drawn files before it is written."""
        rel = os.path.normpath(item.relpath)
        if rel.startswith(".."):
            rel = os.path.basename(rel)
        stem, orig_ext = os.path.splitext(rel)
        ext = ext or (orig_ext.lower() if orig_ext.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".jpg")
        candidate, n = stem + ext, 1
        while not self._free(candidate):
            candidate = f"{stem}-{n}{ext}"
            n += 1
        if candidate != stem + ext and os.path.lexists(os.path.join(self.directory, stem + ext)):
            self.renamed.append(candidate)
        self.used.add(candidate)
        if candidate not in self.made:
            os.makedirs(self.directory, exist_ok=True)
            with open(self.marker, "a", encoding="utf-8") as fh:  # before the file: a kill never hides one
                fh.write(candidate + "\n")
            self.made.add(candidate)
        return os.path.join(self.directory, candidate)


def _save_drawn(image, detections, path: str) -> None:
    drawn = draw_detections(image, [d.bbox for d in detections], [d.label for d in detections],
                            [d.prob for d in detections], color_key=[d.label_id for d in detections])
    options = {"quality": 95} if path.lower().endswith((".jpg", ".jpeg", ".webp")) else {}
    try:
        save_image(path, drawn, **options)
    except OSError as exc:
        raise DetkitError(f"{path}: cannot write drawn image ({exc.strerror or exc})") from None


def _record(file: str, width: int, height: int, detections: Iterable, **extra) -> dict:
    record = {"file": file}
    record.update(extra)
    record.update({"width": width, "height": height, "objects": [d.to_json() for d in detections]})
    return record


class Counters:
    """What a prediction run did: images, video frames, objects found, inputs skipped."""

    def __init__(self):
        self.images = 0
        self.frames = 0
        self.objects = 0
        self.failed = 0


def predict_images(items: list, predictor: BatchPredictor, emit: Callable[[dict], None], drawn: Optional[DrawnNames],
                   counters: Counters, show_progress: bool) -> None:
    """Run the model over image items in order, emitting one record per readable image."""
    bar = progress(total=len(items), desc="predict", unit="img", disable=not show_progress)
    workers = 2
    window = max(READ_AHEAD, predictor.batch_size * 2)
    batch: list = []

    def flush() -> None:
        if not batch:
            return
        results = predictor([arr for _, _, arr in batch])
        for (item, pil, arr), dets in zip(batch, results):
            emit(_record(item.path, arr.shape[1], arr.shape[0], dets))
            counters.images += 1
            counters.objects += len(dets)
            if drawn is not None:
                _save_drawn(pil, dets, drawn.path_for(item))
        bar.update(len(batch))
        batch.clear()

    try:
        for item, result in _read_ahead(items, inputs.read_image, workers, window):
            if isinstance(result, Exception):
                counters.failed += 1
                _warn(f"skipped {result}")
                bar.update(1)
                continue
            batch.append((item, result, np.asarray(result, dtype=np.uint8)))
            if len(batch) >= predictor.batch_size:
                flush()
        flush()
    finally:
        bar.close()


def predict_video(item: inputs.InputItem, predictor: BatchPredictor, emit: Callable[[dict], None],
                  drawn: Optional[DrawnNames], counters: Counters, show_progress: bool) -> None:
    """One record per frame (with "frame" and "time"); with a drawn dir, the video re-encoded with boxes."""
    try:
        reader = inputs.VideoReader(item.path)
    except inputs.UnreadableInput as exc:
        counters.failed += 1
        _warn(f"skipped {exc}")
        return
    writer = None
    out_path = None
    frames_done = 0
    tmp_path = None
    total = reader.info.num_frames
    bar = progress(total=total, desc=os.path.basename(item.path), unit="frame",
                   disable=not show_progress or (total is not None and total <= PROGRESS_MIN_ITEMS))
    try:
        if drawn is not None:
            ext = os.path.splitext(item.relpath)[1].lower()
            out_path = drawn.path_for(item, ext if ext in (".mp4", ".mkv", ".mov", ".avi", ".webm") else ".mp4")
            os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
            root, ext = os.path.splitext(out_path)
            tmp_path = f"{root}.partial{ext}"
            writer = inputs.VideoWriter(tmp_path, reader.info.fps)
        pending: list = []

        def flush() -> None:
            nonlocal frames_done
            if not pending:
                return
            results = predictor([frame for _, _, frame in pending])
            for (index, seconds, frame), dets in zip(pending, results):
                emit(_record(item.path, frame.shape[1], frame.shape[0], dets, frame=index, time=round(seconds, 4)))
                counters.frames += 1
                counters.objects += len(dets)
                if writer is not None:
                    drawn_frame = draw_detections(Image.fromarray(frame), [d.bbox for d in dets],
                                                  [d.label for d in dets], [d.prob for d in dets],
                                                  color_key=[d.label_id for d in dets])
                    writer.write(drawn_frame)
            frames_done += len(pending)
            bar.update(len(pending))
            pending.clear()

        try:
            for index, seconds, frame in reader:
                pending.append((index, seconds, frame))
                if len(pending) >= predictor.batch_size:
                    flush()
            flush()
        except inputs.UnreadableInput as exc:
            counters.failed += 1
            _warn(f"skipped {exc}")
            return
        if frames_done == 0:
            counters.failed += 1
            _warn(f"skipped {item.path}: video has no frames")
            return
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp_path, out_path)
            tmp_path = None
    finally:
        bar.close()
        reader.close()
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if tmp_path and os.path.exists(tmp_path):
            os.remove(tmp_path)


def check_output_file(path: str, overwrite: bool) -> None:
    """Refuse an existing -f file unless `overwrite`, and even then one not written by `detkit predict`."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise DetkitError(f"{path}: is a directory; -f/--output-file names the JSON-lines file to write")
    if not overwrite:
        raise DetkitError(f"{path}: already exists; pass --overwrite to replace it, or choose another -f")
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        record = json.loads(first) if first.strip() else {"file": "", "objects": []}
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    if not (isinstance(record, dict) and "file" in record and "objects" in record):
        raise DetkitError(f"{path}: not replacing it: it is not JSON lines written by `detkit predict`; "
                          "choose another -f")


def predict_items(items: list, predictor: BatchPredictor, emit: Callable[[dict], None],
                  drawn_dir: Optional[str] = None, show_progress: Optional[bool] = None) -> Counters:
    """Predict on image and video items (from `inputs.expand_paths`), emitting one record per image or frame."""
    images = [i for i in items if i.kind == "image"]
    videos = [i for i in items if i.kind == "video"]
    if show_progress is None:
        show_progress = len(images) > PROGRESS_MIN_ITEMS or bool(videos)
    drawn = DrawnNames(drawn_dir, [i.path for i in items]) if drawn_dir else None
    counters = Counters()
    if images:
        predict_images(images, predictor, emit, drawn, counters, show_progress)
    for video in videos:
        predict_video(video, predictor, emit, drawn, counters, show_progress)
    if drawn is not None and drawn.renamed:
        _warn(f"{len(drawn.renamed)} drawn cop{'y' if len(drawn.renamed) == 1 else 'ies'} got a new name (e.g. "
              f"{drawn.renamed[0]}): a file of the same name in {drawn_dir} is an input or was not drawn by "
              "detkit predict, and is kept")
    return counters
