"""`detkit predict`: detect objects in images, folders, globs and videos; JSON lines out, drawn copies optional."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Iterable, Iterator, Optional, Sequence

import click

from detkit import inputs, packing
from detkit.cli.common import build_config, checkpoint_or_default, config_options, run_overrides, tensorflow
from detkit.errors import CheckpointError, ConfigError, DatasetError, DetkitError

# More inputs than this get a progress bar.
PROGRESS_MIN_ITEMS = 3
# Images decoded ahead of the model, per batch slot.
READ_AHEAD = 4
NO_CHECKPOINT_HELP = (
    "no checkpoint given: pass --checkpoint RUN_DIR (a run of `detkit train`, a ckpt-N prefix or a packed .tar), "
    "or -c config.yml of a trained run; train one with `detkit train -c config.yml`"
)


def _split_classes(value: Optional[str]) -> Optional[list[str]]:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def _warn(message: str) -> None:
    """A warning line on stderr that does not break an active progress bar."""
    from tqdm import tqdm

    tqdm.write(f"detkit: warning: {message}", file=sys.stderr)


def _info(message: str) -> None:
    click.echo(f"detkit: {message}", err=True)


def predict_overrides(config_files: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Overrides for the run's config: the `predict` section of the -c files (if any), then the -o items."""
    return run_overrides(config_files, overrides, "predict")


@contextlib.contextmanager
def checkpoint_source(checkpoint: Optional[str], config_files: Sequence[str],
                      overrides: Sequence[str]) -> Iterator[str]:
    """The run dir or checkpoint prefix to load: --checkpoint (a packed .tar is unpacked to a temporary
    directory for the duration), else train.job_dir/train.run_name of the -c config."""
    if checkpoint:
        if packing.is_packed(checkpoint):
            tmp = tempfile.mkdtemp(prefix="detkit-unpacked-")
            try:
                run_dir = packing.unpack(checkpoint, os.path.join(tmp, "run"), overwrite=True)
                yield run_dir
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        if checkpoint.endswith(".index") and os.path.isfile(checkpoint):
            checkpoint = checkpoint[: -len(".index")]
        packing.check_has_checkpoint(checkpoint)
        yield checkpoint
        return
    if not config_files:
        raise CheckpointError(NO_CHECKPOINT_HELP)
    cfg = build_config(config_files, overrides)
    run_dir = packing.run_from_config(cfg.train.job_dir, cfg.train.run_name)
    packing.check_has_checkpoint(run_dir)
    yield run_dir


class BatchPredictor:
    """Detections for a list of images with one model call per `batch_size` images.

    batch_size 1 goes through `Detector.predict`. Larger batches pad the resized images to a common
    size (as the evaluation pipeline does); zero padding can move scores of boxes at the bottom/right
    border very slightly, so the default (predict.batch_size: 1) gives exactly `Detector.predict`'s output.
    """

    def __init__(self, detector, batch_size: int, min_prob: float, max_detections: int,
                 only_classes: Optional[list[str]], ignore_classes: Optional[list[str]]):
        self.detector = detector
        self.batch_size = max(1, batch_size)
        self.min_prob = min_prob
        self.max_detections = max_detections
        self.only = only_classes
        self.ignore = ignore_classes
        self._batched = None

    def __call__(self, images: list) -> list[list]:
        if self.batch_size == 1 or len(images) == 1:
            return [self.detector.predict(im, min_prob=self.min_prob, max_detections=self.max_detections,
                                          only_classes=self.only, ignore_classes=self.ignore) for im in images]
        return self._predict_padded(images)

    def _predict_padded(self, images: list) -> list[list]:
        import numpy as np
        import tensorflow as tf

        from detkit.datasets.pipeline import input_hw
        from detkit.detector import Detection
        from detkit.pretrained.classes import UNUSED_CLASS

        image_cfg = self.detector.config.dataset.image
        if self._batched is None:
            model = self.detector.model

            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                          tf.TensorSpec([None, 2], tf.int32)])
            def run(batch, hw):
                return model((batch, hw), training=False)

            self._batched = run
        resized, sizes, origs = [], [], []
        for image in images:
            hw = tf.shape(image)[:2]
            new_hw = input_hw(hw, image_cfg.min_size, image_cfg.max_size, image_cfg.size_rounding)
            resized.append(tf.image.resize(tf.cast(image, tf.float32), new_hw))
            sizes.append(new_hw.numpy())
            origs.append(np.asarray(image.shape[:2], np.float64))
        height = max(int(s[0]) for s in sizes)
        width = max(int(s[1]) for s in sizes)
        batch = tf.stack([tf.pad(r, [[0, height - int(s[0])], [0, width - int(s[1])], [0, 0]])
                          for r, s in zip(resized, sizes)])
        out = self._batched(batch, tf.constant(np.stack(sizes).astype(np.int32)))
        boxes_all, scores_all = out["boxes"].numpy(), out["scores"].numpy()
        labels_all, counts = out["labels"].numpy(), out["num_detections"].numpy()
        only = set(self.only) if self.only else None
        ignore = set(self.ignore or ()) | {UNUSED_CLASS}
        names = self.detector.class_names
        results = []
        for i, (size, orig) in enumerate(zip(sizes, origs)):
            ratio = orig / size.astype(np.float64)
            scale = np.array([ratio[1], ratio[0], ratio[1], ratio[0]], np.float32)
            dets = []
            for box, score, label in zip(boxes_all[i, :counts[i]] * scale, scores_all[i, :counts[i]],
                                         labels_all[i, :counts[i]]):
                name = names[int(label) - 1]
                if score < self.min_prob or name in ignore or (only is not None and name not in only):
                    continue
                dets.append(Detection([float(v) for v in box], name, int(label), float(score)))
                if len(dets) >= self.max_detections:
                    break
            results.append(dets)
        return results


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
    """Output paths for drawn copies: the input's path relative to its folder/glob, made unique."""

    def __init__(self, directory: str):
        self.directory = directory
        self.used: set[str] = set()

    def path_for(self, item: inputs.InputItem, ext: Optional[str] = None) -> str:
        rel = os.path.normpath(item.relpath)
        if rel.startswith(".."):
            rel = os.path.basename(rel)
        stem, orig_ext = os.path.splitext(rel)
        ext = ext or (orig_ext.lower() if orig_ext.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".jpg")
        candidate, n = stem + ext, 1
        while candidate in self.used:
            candidate = f"{stem}-{n}{ext}"
            n += 1
        self.used.add(candidate)
        return os.path.join(self.directory, candidate)


def _save_drawn(image, detections, path: str) -> None:
    from detkit.utils.draw import draw_detections

    drawn = draw_detections(image, [d.bbox for d in detections], [d.label for d in detections],
                            [d.prob for d in detections], color_key=[d.label_id for d in detections])
    options = {"quality": 95} if path.lower().endswith((".jpg", ".jpeg", ".webp")) else {}
    try:
        from detkit.utils.atomic import save_image

        save_image(path, drawn, **options)
    except OSError as exc:
        raise DetkitError(f"{path}: cannot write drawn image ({exc.strerror or exc})") from None


def _record(file: str, width: int, height: int, detections: Iterable, **extra) -> dict:
    record = {"file": file}
    record.update(extra)
    record.update({"width": width, "height": height, "objects": [d.to_json() for d in detections]})
    return record


class Counters:
    def __init__(self):
        self.images = 0
        self.frames = 0
        self.objects = 0
        self.failed = 0


def predict_images(items: list, predictor: BatchPredictor, emit, drawn: Optional[DrawnNames],
                   counters: Counters, show_progress: bool) -> None:
    """Run the model over image items in order, emitting one record per readable image."""
    from detkit.utils.progress import progress

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

    import numpy as np

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


def predict_video(item: inputs.InputItem, predictor: BatchPredictor, emit, drawn: Optional[DrawnNames],
                  counters: Counters, show_progress: bool) -> None:
    """One record per frame (with "frame" and "time"); with a drawn dir, the video re-encoded with boxes."""
    from PIL import Image

    from detkit.utils.progress import progress

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
                    from detkit.utils.draw import draw_detections

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


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT|FILE.tar",
              help="A run directory (its newest checkpoint), a checkpoint prefix RUN/checkpoints/ckpt-N, "
                   "or a file from `detkit checkpoint pack`. Default: the run of -c's train.job_dir/run_name; "
                   "with no -c either, the downloaded model (accurate, else mobile, else fast).")
@config_options
@click.option("-f", "--output-file", type=click.Path(dir_okay=False),
              help="Write the JSON lines to this file (atomically) instead of stdout.")
@click.option("-d", "--save-drawn", "drawn_dir", type=click.Path(file_okay=False),
              help="Folder for copies of the images (and videos) with boxes, labels and scores drawn.")
@click.option("--min-prob", type=click.FloatRange(0.0, 1.0), help="Score threshold (default predict.min_prob).")
@click.option("--max-detections", type=click.IntRange(min=1),
              help="At most this many objects per image (default predict.max_detections).")
@click.option("--only-classes", metavar="A,B", help="Keep only these classes.")
@click.option("--ignore-classes", metavar="A,B", help="Drop these classes.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per model call (default predict.batch_size).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: when there are more than a few inputs).")
def predict(paths: tuple[str, ...], checkpoint: Optional[str], config_files: tuple[str, ...],
            overrides: tuple[str, ...], output_file: Optional[str], drawn_dir: Optional[str],
            min_prob: Optional[float], max_detections: Optional[int], only_classes: Optional[str],
            ignore_classes: Optional[str], batch_size: Optional[int], show_progress: Optional[bool]) -> None:
    """Detect objects in images, folders (recursively), globs and videos.

    Prints one JSON object per image (per frame for videos) and line:
    {"file": ..., "width": W, "height": H, "objects": [{"bbox": [xmin, ymin, xmax, ymax], "label": ..., "prob": ...}]}
    with boxes in pixels of the upright image (EXIF orientation applied). Video records also carry
    "frame" (index) and "time" (seconds). Unreadable files are reported on stderr and skipped; the exit
    code is 1 only if nothing could be read.
    """
    expansion = inputs.expand_paths(paths)
    for arg in expansion.missing:
        _warn(f"{arg}: no such file, or no images/videos in it")
    items = expansion.items
    if not items:
        raise DatasetError(f"no images or videos found in {', '.join(paths)}")
    only = _split_classes(only_classes)
    ignore = _split_classes(ignore_classes)
    run_overrides = predict_overrides(config_files, overrides)
    checkpoint = checkpoint_or_default(checkpoint, config_files)

    with checkpoint_source(checkpoint, config_files, overrides) as source:
        tensorflow()
        from detkit.detector import Detector

        detector = Detector.from_checkpoint(source, run_overrides)
        for option, names in (("--only-classes", only), ("--ignore-classes", ignore)):
            unknown = [n for n in names or () if n not in detector.class_names]
            if unknown:
                raise ConfigError(f"{option}: unknown class {', '.join(unknown)} "
                                  f"(classes: {', '.join(detector.class_names)})")
        cfg = detector.config.predict
        predictor = BatchPredictor(
            detector, batch_size or cfg.batch_size,
            cfg.min_prob if min_prob is None else min_prob,
            cfg.max_detections if max_detections is None else max_detections, only, ignore,
        )
        images = [i for i in items if i.kind == "image"]
        videos = [i for i in items if i.kind == "video"]
        if show_progress is None:
            show_progress = len(images) > PROGRESS_MIN_ITEMS or bool(videos)
        drawn = DrawnNames(drawn_dir) if drawn_dir else None
        counters = Counters()
        start = time.time()
        try:
            with _output(output_file) as out:
                def emit(record: dict) -> None:
                    out.write(json.dumps(record) + "\n")
                    if out is sys.stdout:
                        out.flush()

                if images:
                    predict_images(images, predictor, emit, drawn, counters, show_progress)
                for video in videos:
                    predict_video(video, predictor, emit, drawn, counters, show_progress)
                if counters.images + counters.frames == 0:
                    raise DatasetError(f"none of the {len(items)} input(s) could be read; nothing predicted")
        except BrokenPipeError:
            # stdout closed early (e.g. `detkit predict ... | head`): stop quietly, as other Unix tools do.
            _silence_stdout()
            raise click.exceptions.Exit(0)
        seconds = time.time() - start
        done = counters.images + counters.frames
        what = f"{counters.images} image(s)" + (f", {counters.frames} video frame(s)" if counters.frames else "")
        _info(f"predicted {what}, {counters.objects} object(s) in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f}/s)"
              + (f"; {counters.failed} skipped" if counters.failed else "")
              + (f"; wrote {output_file}" if output_file else "")
              + (f"; drawn in {drawn_dir}" if drawn_dir else ""))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def _output(path: Optional[str]) -> Iterator[IO[str]]:
    """stdout, or a file written atomically (kept only if the command finishes)."""
    if not path:
        yield sys.stdout
        return
    from detkit.utils.atomic import atomic_path, ensure_parent

    try:
        ensure_parent(path)
    except OSError as exc:
        raise DetkitError(f"{path}: cannot write ({exc.strerror or exc}); choose another -f/--output-file") from None
    with atomic_path(path) as tmp:
        try:
            fh = open(tmp, "w", encoding="utf-8")
        except OSError as exc:
            raise DetkitError(f"{path}: cannot write ({exc.strerror or exc})") from None
        with fh:
            yield fh
