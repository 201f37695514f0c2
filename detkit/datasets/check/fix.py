"""`detkit dataset check --fix OUT`: a corrected copy as a converted folder; the originals are only read.

Boxes drawn on the EXIF-upright photo are moved onto the stored pixels, duplicate boxes dropped (the first kept),
classes merged (--merge-classes); writing then clips boxes to their image and drops those of no size or wholly
outside, as `dataset transform` does. Every change is counted in each split's summary ("fixes").
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from typing import Optional

from detkit.datasets.check import CheckOptions, check_inputs, read_for_check
from detkit.datasets.check.findings import ERROR, CheckReport, Finding
from detkit.datasets.check.images import ImageFacts
from detkit.datasets.check.rules import MOVE_BOXES
from detkit.datasets.example import Example
from detkit.datasets.orientation import box_to_stored
from detkit.datasets.output import check_writable
from detkit.datasets.transform import TransformOptions, write_inputs
from detkit.errors import DatasetError


def fix(opts: CheckOptions, output_dir: str, overwrite: bool = False, workers: Optional[int] = None
        ) -> tuple[CheckReport, dict[str, dict]]:
    """Check, correct and write `opts`' splits to `output_dir` as TFRecords; (the check's report, the summaries)."""
    given = [p for p in (opts.source.data_dir, opts.source.annotations, opts.source.images_dir) if p]
    if any(os.path.realpath(p) == os.path.realpath(output_dir) for p in given):
        raise DatasetError(f"--fix {output_dir} is the data being checked: write the corrected copy elsewhere")
    renamed: Counter = Counter()
    inputs, known = read_for_check(opts, keep_bytes=True, renamed=renamed)
    check_writable(output_dir, list(inputs), overwrite)
    report = check_inputs(inputs, opts.fmt, skip_bad=opts.skip_bad, images=opts.images, workers=opts.workers,
                          show_progress=opts.show_progress, known_classes=known)
    bad = [f for f in report.findings if f.kind == "bad_annotation" and f.severity == ERROR]
    if bad:
        raise DatasetError(f"{bad[0].file}: {bad[0].message}: --fix cannot correct an annotation it cannot read; "
                           f"fix it, or add --skip-bad to leave {'those images' if len(bad) > 1 else 'the image'} out")
    by_example = defaultdict(list)
    for f in report.findings:
        if f.index >= 0:
            by_example[(f.split, f.index)].append(f)
    changes = {split: Counter() for split in inputs}
    for split, data in inputs.items():
        data.examples = [fix_example(ex, by_example[(split, i)], report.facts.get((split, i)), changes[split])
                         for i, ex in enumerate(data.examples)]
        changes[split]["boxes renamed by --merge-classes"] = renamed[split]
    topts = TransformOptions(fmt=opts.fmt, output_dir=output_dir, splits=list(inputs), source=opts.source,
                             skip_bad=True, overwrite=overwrite, workers=workers or opts.workers,
                             show_progress=opts.show_progress, check=False)
    extra = {split: {"fixes": {k: v for k, v in changes[split].items() if v},
                     "merged_classes": dict(opts.merge_classes)} for split in inputs}
    summaries = write_inputs(inputs, topts, report, extra)
    for split, summary in summaries.items():
        fixes = summary["fixes"]
        if summary["clipped_boxes"]:
            fixes["boxes clipped to their image"] = summary["clipped_boxes"]
        if summary["dropped_boxes"]:
            fixes["boxes of no size or wholly outside dropped"] = summary["dropped_boxes"]
    return report, summaries


def fix_example(example: Example, found: list[Finding], facts: Optional[ImageFacts], changes: Counter) -> Example:
    """One example with its boxes moved onto the stored pixels (EXIF) and its duplicate boxes dropped."""
    if facts is not None and any(f.kind == "exif_mismatch" and f.fix == MOVE_BOXES for f in found):
        example = example.with_boxes(box_to_stored(b, facts.orientation, facts.width, facts.height)
                                     for b in example.boxes)
        example = dataclasses.replace(example, width=facts.width, height=facts.height)
        changes["boxes moved from the upright photo to the stored pixels"] += example.num_boxes
    duplicates = {f.box_index for f in found if f.kind == "duplicate_box"}
    if duplicates:
        example = example.keep_boxes(j for j in range(example.num_boxes) if j not in duplicates)
        changes["duplicate boxes dropped"] += len(duplicates)
    return example
