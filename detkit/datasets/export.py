"""`detkit dataset export`: a converted folder, or any source a reader reads, as COCO JSON, VOC XML or YOLO.

The same stages as `dataset transform` (read, load and validate the images, make the boxes valid), then a writer of
detkit/datasets/writers/ instead of TFRecords. Coordinates are written so that converting the export gives the same
records back. The folder is built beside --output-dir and renamed into place; --overwrite replaces only a folder
an earlier export made (its EXPORT_MARKER file).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Optional, Sequence

from detkit.datasets.annotations import check_source
from detkit.datasets.readers import CONVERTED, Source
from detkit.datasets.tfrecord import list_splits
from detkit.datasets.transform import PreparedSplit, TransformOptions, class_map, prepare_split, read_inputs
from detkit.datasets.writers import EXPORT_FORMATS, get_writer
from detkit.errors import DatasetError, first_line, is_disk_full
from detkit.utils.atomic import ensure_parent, make_temp_dir, remove_stale_temp, replace_dir

EXPORT_MARKER = ".detkit-export.json"


@dataclass
class ExportOptions:
    """Everything `detkit dataset export` takes."""

    to: str  # coco | voc | yolo
    output_dir: str
    fmt: str  # the source's reader format, or readers.CONVERTED for a transform output (source.data_dir)
    source: Source
    splits: Sequence[str] = ()  # () = every split of a converted folder
    only_classes: Optional[Sequence[str]] = None
    skip_bad: bool = False
    overwrite: bool = False
    workers: int = 2
    show_progress: bool = False


def export(opts: ExportOptions) -> dict:
    """Write the splits of `opts` in format `opts.to`; {"splits": {split: {"images", "boxes", ...}}, "dropped": {...}}."""
    if opts.to not in EXPORT_FORMATS:
        raise DatasetError(f"unknown export format {opts.to!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    splits = list(opts.splits)
    if opts.fmt == CONVERTED and not splits:
        splits = list_splits(opts.source.data_dir or "")
        if not splits:
            raise DatasetError(f"{opts.source.data_dir}: no .tfrecord shards (not a `detkit dataset transform` output)")
    check_source(opts.fmt, splits, opts.source)
    _check_output(opts.output_dir, opts.overwrite)
    topts = TransformOptions(fmt=opts.fmt, output_dir="", splits=splits, source=opts.source,
                             only_classes=opts.only_classes, skip_bad=opts.skip_bad, workers=opts.workers,
                             show_progress=opts.show_progress, check=False)
    inputs = read_inputs(topts)
    classes = class_map(inputs, topts)
    out = os.path.abspath(opts.output_dir)
    parent, name = os.path.dirname(out), os.path.basename(out)
    try:
        ensure_parent(out)
        remove_stale_temp(parent, f"{name}.export")
        staging = make_temp_dir(parent, f"{name}.export")
    except OSError as exc:
        raise DatasetError(f"output directory {opts.output_dir}: cannot write ({first_line(exc)})") from None
    try:
        writer = get_writer(opts.to)(staging, classes)
        report: dict = {"format": opts.to, "classes": classes, "splits": {}}
        for split, data in inputs.items():
            counts = PreparedSplit()
            for example in prepare_split(split, data, topts, counts):
                writer.add(split, example)
            report["splits"][split] = {"images": counts.stats.images, "boxes": sum(counts.stats.boxes_per_class.values()),
                                       "skipped": counts.skipped, "clipped_boxes": counts.boxes.clipped,
                                       "dropped_boxes": counts.boxes.dropped}
        report["flags_dropped"] = writer.close()
        with open(os.path.join(staging, EXPORT_MARKER), "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
        replace_dir(staging, out)
    except OSError as exc:
        fix = "free some space or choose another --output-dir" if is_disk_full(exc) else "choose a writable --output-dir"
        raise DatasetError(f"output directory {opts.output_dir}: cannot write ({first_line(exc)}); {fix}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _check_output(out_dir: str, overwrite: bool) -> None:
    """Refuse an output folder that holds anything, unless --overwrite and an earlier export made it."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError(f"output directory {out_dir} is a file")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not overwrite:
        raise DatasetError(f"output directory {out_dir} is not empty: use --overwrite to replace an earlier export, "
                           "or choose another --output-dir")
    if not os.path.isfile(os.path.join(out_dir, EXPORT_MARKER)):
        raise DatasetError(f"output directory {out_dir} was not made by `detkit dataset export` (no {EXPORT_MARKER}): "
                           "it is not replaced; choose another --output-dir")


__all__ = ["EXPORT_FORMATS", "EXPORT_MARKER", "ExportOptions", "export"]
