"""`detkit predict`: detect objects in images, folders, globs and videos; JSON lines out, drawn copies optional."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import IO, Iterator, Optional, Sequence

import click

from detkit import inputs
from detkit.cli.common import checkpoint_or_default, config_options, run_overrides, tensorflow
from detkit.errors import DatasetError, DetkitError
from detkit.runs import checkpoint_source

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


def _split_classes(value: Optional[str]) -> Optional[list[str]]:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def _info(message: str) -> None:
    click.echo(f"detkit: {message}", err=True)


def predict_overrides(config_files: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Overrides for the run's config: the `predict` section of the -c files (if any), then the -o items."""
    return run_overrides(config_files, overrides, "predict")


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT|FILE.tar",
              help="A run directory (its newest checkpoint), a checkpoint prefix RUN/checkpoints/ckpt-N, "
                   "or a file from `detkit checkpoint pack`. Default: the run of -c's train.job_dir/run_name; "
                   "with no -c either, the downloaded model (accurate, else mobile, else fast).")
@config_options
@click.option("-f", "--output-file", type=click.Path(dir_okay=False),
              help="Write the JSON lines to this file (atomically) instead of stdout.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing -f file (only one written by detkit predict).")
@click.option("-d", "--save-drawn", "drawn_dir", type=click.Path(file_okay=False),
              help="Folder for copies of the images (and videos) with boxes, labels and scores drawn. A "
                   "drawn copy never replaces an input or a file detkit predict did not draw there: it gets "
                   "a free name instead (photo-1.jpg), said on stderr.")
@click.option("--min-prob", type=click.FloatRange(0.0, 1.0), help="Score threshold (default predict.min_prob).")
@click.option("--max-detections", type=click.IntRange(min=1),
              help="At most this many objects per image (default predict.max_detections).")
@click.option("--only-classes", metavar="A,B", help="Keep only these classes.")
@click.option("--ignore-classes", metavar="A,B", help="Drop these classes.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per model call (default predict.batch_size).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: when there are more than a few inputs).")
def predict(paths: tuple[str, ...], checkpoint: Optional[str], config_files: tuple[str, ...],
            overrides: tuple[str, ...], output_file: Optional[str], overwrite: bool, drawn_dir: Optional[str],
            min_prob: Optional[float], max_detections: Optional[int], only_classes: Optional[str],
            ignore_classes: Optional[str], batch_size: Optional[int], show_progress: Optional[bool]) -> None:
    """Detect objects in images, folders (recursively), globs and videos.

    Prints one JSON object per image (per frame for videos) and line:
    {"file": ..., "width": W, "height": H, "objects": [{"bbox": [xmin, ymin, xmax, ymax], "label": ..., "prob": ...}]}
    with boxes in pixels of the upright image (EXIF orientation applied). Video records also carry
    "frame" (index) and "time" (seconds). Unreadable files are reported on stderr and skipped; the exit
    code is 1 only if nothing could be read.
    """
    from detkit.inference.predict import check_output_file

    if output_file:
        check_output_file(output_file, overwrite)
    expansion = inputs.expand_paths(paths)
    for arg in expansion.missing:
        click.echo(f"detkit: warning: {arg}: no such file, or no images/videos in it", err=True)
    items = expansion.items
    if not items:
        raise DatasetError(f"no images or videos found in {', '.join(paths)}")
    only = _split_classes(only_classes)
    ignore = _split_classes(ignore_classes)
    run_overrides = predict_overrides(config_files, overrides)
    checkpoint = checkpoint_or_default(checkpoint, config_files)

    with checkpoint_source(checkpoint, config_files, overrides) as source:
        tensorflow()
        from detkit.inference import Detector
        from detkit.inference.detections import check_class_names
        from detkit.inference.predict import BatchPredictor, predict_items

        detector = Detector.from_checkpoint(source, run_overrides)
        check_class_names("--only-classes", only, detector.class_names)
        check_class_names("--ignore-classes", ignore, detector.class_names)
        cfg = detector.config.predict
        predictor = BatchPredictor(
            detector, batch_size or cfg.batch_size,
            cfg.min_prob if min_prob is None else min_prob,
            cfg.max_detections if max_detections is None else max_detections, only, ignore,
        )
        start = time.time()
        try:
            with _output(output_file) as out:
                def emit(record: dict) -> None:
                    out.write(json.dumps(record) + "\n")
                    if out is sys.stdout:
                        out.flush()

                counters = predict_items(items, predictor, emit, drawn_dir, show_progress)
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
