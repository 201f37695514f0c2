"""`detkit dataset transform`: annotations (VOC, COCO, CSV, YOLO, LabelMe) -> sharded TFRecords, classes.json, summaries.

The stages are also those of `dataset check --fix` and `dataset export`: read the annotations of each split
(`detkit.datasets.annotations`), check them (`detkit.datasets.check`), load and validate the images and make the
boxes valid (`prepare_split`), then write records (here) or another format (`detkit.datasets.export`).
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

from detkit.datasets.annotations import SplitInput, check_source, read_splits
from detkit.datasets.boxes import BoxReport, sanitize_boxes
from detkit.datasets.check import check_counts, check_inputs, failure_message
from detkit.datasets.check.findings import CheckFailed
from detkit.datasets.classes import classes_path, label_map, read_classes, reconcile, sorted_classes
from detkit.datasets.example import Example, Problem
from detkit.datasets.images import BadImage, LoadedImage, load_image, validate_image
from detkit.datasets.output import Staging, check_writable
from detkit.datasets.parallel import ordered_map
from detkit.datasets.readers import Source
from detkit.datasets.tfrecord import ShardWriter, encode_example, list_splits, shard_name
from detkit.errors import DatasetError, first_line, is_disk_full
from detkit.utils.pause import pause_point
from detkit.utils.progress import progress


@dataclass
class TransformOptions:
    """Everything `detkit dataset transform` takes."""

    fmt: str  # voc | coco | csv | yolo | labelme (or readers.CONVERTED: a transform output read back)
    output_dir: str
    splits: Sequence[str]
    source: Source
    only_classes: Optional[Sequence[str]] = None
    class_examples: Optional[int] = None  # at most this many boxes per class and split
    limit_examples: Optional[int] = None  # at most this many images per split
    overwrite: bool = False
    skip_bad: bool = False
    num_shards: Optional[int] = None
    shard_size: Optional[int] = None  # images per shard; default 1000 when neither is given
    workers: int = 2
    show_progress: bool = False
    check: bool = True  # run `detkit dataset check` on the annotations first and stop on its errors


@dataclass
class SplitStats:
    """Counts for a split's summary, updated as records are written."""

    images: int = 0
    negatives: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)
    images_per_class: Counter = field(default_factory=Counter)
    difficult: int = 0
    crowd: int = 0
    over_cap: int = 0
    reencoded: list[dict] = field(default_factory=list)
    size_mismatches: list[dict] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def add(self, example: Example) -> None:
        """Count a written example."""
        self.notes.update(example.notes)
        self.images += 1
        self.negatives += example.num_boxes == 0
        self.boxes_per_class.update(example.classes)
        self.images_per_class.update(set(example.classes))
        self.difficult += sum(example.difficult)
        self.crowd += sum(example.is_crowd)


class ClassCap:
    """--class-examples: take images in order while each of their classes stays within the cap.

    Images are never partially labelled (an unlabelled object would be taught as background),
    so an image that would push any class over the cap is left out whole.
    """

    def __init__(self, limit: Optional[int]):
        """No cap when `limit` is None."""
        self.limit = limit
        self.counts: Counter = Counter()

    def admit(self, classes: Sequence[str]) -> bool:
        """Whether an image with boxes of `classes` fits; if so, count them."""
        if self.limit is None or not classes:
            return True
        wanted = Counter(classes)
        if any(self.counts[c] + k > self.limit for c, k in wanted.items()):
            return False
        self.counts.update(wanted)
        return True


def transform(opts: TransformOptions) -> dict[str, dict]:
    """Convert every split of `opts`; returns the summary of each split (also written as JSON).

    With `opts.check`, the annotations and images are checked first (`detkit dataset check`): CheckFailed before
    anything is written when a finding would break training; the check's counts go in each summary ("check").
    """
    _check_options(opts)
    check_writable(opts.output_dir, opts.splits, opts.overwrite)
    inputs = read_inputs(opts)
    report = None
    if opts.check:
        report = check_inputs(inputs, opts.fmt, skip_bad=opts.skip_bad, workers=opts.workers,
                              show_progress=opts.show_progress)
        if report.errors:
            raise CheckFailed(failure_message(report, "convert as it is with --no-check"), report)
    return write_inputs(inputs, opts, report)


def write_inputs(inputs: dict[str, SplitInput], opts: TransformOptions, report: object = None,
                 extra: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """Write the read (and maybe fixed) splits as TFRecords in opts.output_dir; the summaries.

    `report` (a CheckReport) adds each split's check counts; `extra` adds keys to a split's summary.
    """
    classes = class_map(inputs, opts)
    try:
        with Staging(opts.output_dir, "transform") as staging:
            shards, summaries = {}, {}
            for split, data in inputs.items():
                shards[split], summaries[split] = _write_split(split, data, classes, staging.dir, opts)
                if report is not None:
                    summaries[split]["check"] = check_counts(report, split)
                summaries[split].update((extra or {}).get(split, {}))
            staging.publish(shards, summaries, classes)
    except OSError as exc:
        fix = "free some space or choose another --output-dir" if is_disk_full(exc) else "choose a writable --output-dir"
        raise DatasetError(f"output directory {opts.output_dir}: cannot write ({first_line(exc)}); {fix}") from None
    return summaries


def _check_options(opts: TransformOptions) -> None:
    """Refuse contradictory or incomplete options before reading anything."""
    check_source(opts.fmt, opts.splits, opts.source)
    if opts.only_classes is not None and not [c for c in opts.only_classes if c.strip()]:
        raise DatasetError("--only-classes: give at least one class name")
    if opts.num_shards is not None and opts.shard_size is not None:
        raise DatasetError("give --num-shards or --shard-size, not both")
    for name in ("class_examples", "limit_examples", "num_shards", "shard_size", "workers"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise DatasetError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def read_inputs(opts: TransformOptions, keep_problems: bool = False,
                adjust: Optional[Callable[[Example], Example]] = None) -> dict[str, SplitInput]:
    """The annotations of every split of `opts` (annotations.read_splits with the options' fields)."""
    return read_splits(opts.fmt, opts.source, opts.splits, opts.only_classes, opts.skip_bad, keep_problems, adjust)


def class_map(inputs: dict[str, SplitInput], opts: TransformOptions) -> list[str]:
    """Sorted class names of the converted splits (or of --only-classes), kept consistent with splits left in place."""
    seen = set().union(*(d.classes_seen for d in inputs.values()))
    kept_splits = [s for s in list_splits(opts.output_dir) if s not in opts.splits] if opts.output_dir else []
    existing = read_classes(opts.output_dir) if kept_splits and os.path.exists(classes_path(opts.output_dir)) else None
    if opts.only_classes is not None:
        wanted = sorted_classes(c.strip() for c in opts.only_classes if c.strip())
        unknown = [c for c in wanted if c not in seen and c not in (existing or [])]
        if unknown:
            raise DatasetError(f"--only-classes: {', '.join(unknown)} not found in the annotations "
                               f"(classes found: {', '.join(sorted(seen)) or 'none'})")
        new = wanted
    else:
        new = sorted_classes(seen)
    return reconcile(new, existing, kept_splits, opts.output_dir)


def _load(example: Example) -> LoadedImage | Problem:
    """Read and validate one image in a worker thread; a Problem names the image file."""
    try:
        if example.image_bytes is not None:  # a record read back, or an image embedded in its annotation
            return validate_image(example.image_bytes)
        return load_image(example.image_path)
    except BadImage as exc:
        return Problem(example.image_path, str(exc))


@dataclass
class PreparedSplit:
    """What preparing a split counted: written images, box fixes, skipped images."""

    stats: SplitStats = field(default_factory=SplitStats)
    boxes: BoxReport = field(default_factory=BoxReport)
    skipped: list[dict] = field(default_factory=list)


def prepare_split(split: str, data: SplitInput, opts: TransformOptions, counts: PreparedSplit) -> Iterator[Example]:
    """The split's examples with validated image bytes and valid boxes, after --class-examples/--limit-examples.

    Images that cannot be used are skipped into `counts.skipped`; each yielded example is counted once the
    consumer asks for the next.
    """
    counts.skipped.extend(p.as_dict() for p in data.problems)
    stats, cap = counts.stats, ClassCap(opts.class_examples)
    bar = progress(total=len(data.examples), desc=f"{split}", unit="img", disable=not opts.show_progress)
    results = ordered_map(_load, data.examples, workers=opts.workers)
    try:
        for example, loaded in results:
            bar.update(1)
            if isinstance(loaded, Problem):
                counts.skipped.append(loaded.as_dict())
                continue
            example = _with_image(example, loaded, stats)
            example = sanitize_boxes(example, counts.boxes)
            if not cap.admit(example.classes):
                stats.over_cap += 1
                continue
            yield example
            stats.add(example)
            if stats.images == 1:
                pause_point("transform.records")
            if opts.limit_examples and stats.images >= opts.limit_examples:
                break
    finally:
        results.close()
        bar.close()
    if not stats.images:
        first = f"; first: {counts.skipped[0]['file']}: {counts.skipped[0]['reason']}" if counts.skipped else ""
        raise DatasetError(f"split {split!r}: no usable images ({len(counts.skipped)} skipped{first})")


def _write_split(split: str, data: SplitInput, classes: list[str], staging_dir: str,
                 opts: TransformOptions) -> tuple[list[str], dict]:
    """Validate images, fix boxes, apply caps and write the split's records; (staged shard paths, summary)."""
    labels = label_map(classes)
    counts = PreparedSplit()
    writer = ShardWriter(staging_dir, split, num_shards=opts.num_shards, shard_size=opts.shard_size)
    try:
        for example in prepare_split(split, data, opts, counts):
            writer.write(encode_example(example, labels))
    finally:
        paths = writer.close()
    summary = split_summary(split, opts, classes, counts, data.filtered_boxes)
    summary["shards"] = [shard_name(split, i, len(paths)) for i in range(len(paths))]
    return paths, summary


def _with_image(example: Example, loaded: LoadedImage, stats: SplitStats) -> Example:
    """The example with its validated bytes and stored pixel size; notes re-encoding and size mismatches."""
    if loaded.reencoded:
        stats.reencoded.append({"file": example.image_path, "reason": loaded.reencoded})
    annotated = (example.width, example.height)
    if all(annotated) and annotated != (loaded.width, loaded.height):
        # Boxes are kept in the annotation's pixels; a swapped size often means an EXIF-rotated photo.
        stats.size_mismatches.append({"file": example.source, "annotated": list(annotated),
                                      "stored": [loaded.width, loaded.height]})
    return dataclasses.replace(example, image_bytes=loaded.data, format=loaded.format,
                               width=loaded.width, height=loaded.height)


def split_summary(split: str, opts: TransformOptions, classes: list[str], counts: PreparedSplit,
                  filtered: int) -> dict:
    """The `<split>-summary.json` content (without "shards")."""
    src, stats, boxes = opts.source, counts.stats, counts.boxes
    return {
        "split": split,
        "type": opts.fmt,
        "source": {k: v for k, v in dataclasses.asdict(src).items() if v is not None},
        "images": stats.images,
        "negatives": stats.negatives,
        "boxes": sum(stats.boxes_per_class.values()),
        "boxes_per_class": {c: stats.boxes_per_class[c] for c in classes},
        "images_per_class": {c: stats.images_per_class[c] for c in classes},
        "difficult_boxes": stats.difficult,
        "crowd_boxes": stats.crowd,
        "clipped_boxes": boxes.clipped,
        "dropped_boxes": boxes.dropped,
        "dropped_box_details": boxes.dropped_details,
        "filtered_boxes": filtered,  # boxes of classes outside --only-classes
        "images_over_class_cap": stats.over_cap,  # left out by --class-examples
        "skipped": counts.skipped,
        "reencoded": stats.reencoded,
        "size_mismatches": stats.size_mismatches,
        "reader_notes": dict(sorted(stats.notes.items())),  # e.g. "polygon as its bounding box": 12
        "classes": classes,
    }
