"""`detkit dataset transform`: annotations in VOC, COCO or CSV -> sharded TFRecords, classes.json, summaries."""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

from detkit.datasets.boxes import BoxReport, sanitize_boxes
from detkit.datasets.classes import classes_path, label_map, read_classes, reconcile, sorted_classes
from detkit.datasets.example import Example, Problem
from detkit.datasets.images import BadImage, LoadedImage, load_image
from detkit.datasets.output import Staging, check_split_name, check_writable
from detkit.datasets.parallel import ordered_map
from detkit.datasets.readers import FORMATS, Reader, Source, get_reader
from detkit.datasets.tfrecord import ShardWriter, encode_example, list_splits, shard_name
from detkit.errors import DatasetError, first_line, is_disk_full
from detkit.utils.pause import pause_point
from detkit.utils.progress import progress


@dataclass
class TransformOptions:
    """Everything `detkit dataset transform` takes."""

    fmt: str  # voc | coco | csv
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


@dataclass
class SplitInput:
    """The annotations of one split, read and filtered by class, before any image is opened."""

    examples: list[Example]
    problems: list[Problem]
    classes_seen: set[str]  # before --only-classes
    filtered_boxes: int = 0


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

    def add(self, example: Example) -> None:
        """Count a written example."""
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
    """Convert every split of `opts`; returns the summary of each split (also written as JSON)."""
    _check_options(opts)
    check_writable(opts.output_dir, opts.splits, opts.overwrite)
    read = get_reader(opts.fmt)
    inputs = {split: _read_split(read, opts, split) for split in opts.splits}
    classes = _class_map(inputs, opts)
    try:
        with Staging(opts.output_dir, "transform") as staging:
            shards, summaries = {}, {}
            for split, data in inputs.items():
                shards[split], summaries[split] = _write_split(split, data, classes, staging.dir, opts)
            staging.publish(shards, summaries, classes)
    except OSError as exc:
        fix = "free some space or choose another --output-dir" if is_disk_full(exc) else "choose a writable --output-dir"
        raise DatasetError(f"output directory {opts.output_dir}: cannot write ({first_line(exc)}); {fix}") from None
    return summaries


def _check_options(opts: TransformOptions) -> None:
    """Refuse contradictory or incomplete options before reading anything."""
    if opts.fmt not in FORMATS:
        raise DatasetError(f"unknown dataset type {opts.fmt!r}; expected one of {', '.join(FORMATS)}")
    if not opts.splits:
        raise DatasetError("give at least one --split")
    for split in opts.splits:
        check_split_name(split)
    if len(set(opts.splits)) != len(opts.splits):
        raise DatasetError(f"--split given twice: {list(opts.splits)}")
    src = opts.source
    if src.data_dir is not None and (src.annotations or src.images_dir):
        raise DatasetError("give --data-dir, or --annotations with --images-dir, not both")
    if src.data_dir is None and not (src.annotations and src.images_dir):
        raise DatasetError("give --data-dir, or both --annotations and --images-dir")
    if src.explicit and len(opts.splits) > 1:
        raise DatasetError("--annotations/--images-dir describe one split: give exactly one --split")
    flat_voc = opts.fmt == "voc" and src.data_dir and not os.path.isdir(os.path.join(src.data_dir, "Annotations"))
    if flat_voc and len(opts.splits) > 1:
        raise DatasetError(f"{src.data_dir}: the flat VOC layout (annotations/ + images/, or XML beside each image) has no split files, "
                           "so every annotation goes to the one --split named; give exactly one")
    if opts.only_classes is not None and not [c for c in opts.only_classes if c.strip()]:
        raise DatasetError("--only-classes: give at least one class name")
    if opts.num_shards is not None and opts.shard_size is not None:
        raise DatasetError("give --num-shards or --shard-size, not both")
    for name in ("class_examples", "limit_examples", "num_shards", "shard_size", "workers"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise DatasetError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _read_split(read: Reader, opts: TransformOptions, split: str) -> SplitInput:
    """All examples of a split from the annotations; a Problem is fatal unless --skip-bad."""
    examples, problems, seen = [], [], set()
    for item in read(opts.source, split):
        if isinstance(item, Problem):
            if not opts.skip_bad:
                raise DatasetError(item.message() + " (use --skip-bad to skip it)")
            problems.append(item)
            continue
        examples.append(item)
        seen.update(item.classes)
    if not examples and not problems:
        raise DatasetError(f"split {split!r}: the annotations list no images")
    data = SplitInput(examples, problems, seen)
    if opts.only_classes is not None:
        wanted = {c.strip() for c in opts.only_classes if c.strip()}
        for i, ex in enumerate(data.examples):
            keep = [j for j, c in enumerate(ex.classes) if c in wanted]
            data.filtered_boxes += ex.num_boxes - len(keep)
            data.examples[i] = ex.keep_boxes(keep)
    return data


def _class_map(inputs: dict[str, SplitInput], opts: TransformOptions) -> list[str]:
    """Sorted class names of the converted splits (or of --only-classes), kept consistent with splits left in place."""
    seen = set().union(*(d.classes_seen for d in inputs.values()))
    kept_splits = [s for s in list_splits(opts.output_dir) if s not in opts.splits]
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
        return load_image(example.image_path)
    except BadImage as exc:
        return Problem(example.image_path, str(exc))


def _write_split(split: str, data: SplitInput, classes: list[str], staging_dir: str,
                 opts: TransformOptions) -> tuple[list[str], dict]:
    """Validate images, fix boxes, apply caps and write the split's records; (staged shard paths, summary)."""
    labels = label_map(classes)
    stats, boxes, cap = SplitStats(), BoxReport(), ClassCap(opts.class_examples)
    skipped = [p.as_dict() for p in data.problems]
    writer = ShardWriter(staging_dir, split, num_shards=opts.num_shards, shard_size=opts.shard_size)
    bar = progress(total=len(data.examples), desc=f"{split}", unit="img", disable=not opts.show_progress)
    results = ordered_map(_load, data.examples, workers=opts.workers)
    try:
        for example, loaded in results:
            bar.update(1)
            if isinstance(loaded, Problem):
                skipped.append(loaded.as_dict())
                continue
            example = _with_image(example, loaded, stats)
            example = sanitize_boxes(example, boxes)
            if not cap.admit(example.classes):
                stats.over_cap += 1
                continue
            writer.write(encode_example(example, labels))
            stats.add(example)
            if stats.images == 1:
                pause_point("transform.records")
            if opts.limit_examples and stats.images >= opts.limit_examples:
                break
    finally:
        results.close()
        bar.close()
        paths = writer.close()
    if not stats.images:
        first = f"; first: {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else ""
        raise DatasetError(f"split {split!r}: no usable images ({len(skipped)} skipped{first})")
    summary = _summary(split, opts, classes, stats, boxes, skipped, data.filtered_boxes, len(paths))
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


def _summary(split: str, opts: TransformOptions, classes: list[str], stats: SplitStats, boxes: BoxReport,
             skipped: list[dict], filtered: int, num_shards: int) -> dict:
    """The `<split>-summary.json` content."""
    src = opts.source
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
        "skipped": skipped,
        "reencoded": stats.reencoded,
        "size_mismatches": stats.size_mismatches,
        "classes": classes,
        "shards": [shard_name(split, i, num_shards) for i in range(num_shards)],
    }
