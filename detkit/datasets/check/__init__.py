"""`detkit dataset check`: what is wrong with a dataset, before training on it.

On a source (the arguments of `dataset transform`) or on a converted folder: boxes outside the image or of no
size, duplicate boxes, the same photo twice or in two splits (by bytes and by perceptual hash), EXIF-rotated
photos whose boxes were drawn on the other orientation, unreadable images, class names that differ only by case,
spacing or plural, rare or absent classes, images without boxes. `findings.py` names the kinds, `rules.py` holds
the rules (pure functions), `images.py` reads each image once, `report.py` prints, `fix.py` writes a corrected copy.
Reading a source never imports TensorFlow; a converted folder is read with protobuf, without running an op.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from detkit.datasets.annotations import check_source, read_splits
from detkit.datasets.check.findings import ERROR, KINDS, CheckFailed, CheckReport, Finding, SplitCounts
from detkit.datasets.check.images import NEAR_DUPLICATE_BITS, hamming_pairs, read_facts
from detkit.datasets.check.report import format_text, summary_line
from detkit.datasets.check.rules import class_findings, duplicate_image_findings, image_findings, problem_findings
from detkit.datasets.classes import read_classes
from detkit.datasets.example import Example
from detkit.datasets.parallel import ordered_map
from detkit.datasets.readers import CONVERTED, Source
from detkit.datasets.tfrecord import list_splits
from detkit.errors import DatasetError
from detkit.utils.progress import progress


@dataclass
class CheckOptions:
    """What `detkit dataset check` takes: a source as for `dataset transform`, or fmt CONVERTED and its folder."""

    fmt: str
    splits: Sequence[str]
    source: Source
    skip_bad: bool = False
    only_classes: Optional[Sequence[str]] = None
    merge_classes: Mapping[str, str] = field(default_factory=dict)  # FROM -> TO, applied as the labels are read
    images: bool = True  # False: annotations only (no image is opened)
    workers: int = 2
    show_progress: bool = False


def check(opts: CheckOptions) -> CheckReport:
    """Every finding of the splits of `opts`."""
    inputs, known = read_for_check(opts)
    return check_inputs(inputs, opts.fmt, skip_bad=opts.skip_bad, images=opts.images, workers=opts.workers,
                        show_progress=opts.show_progress, known_classes=known)


def read_for_check(opts: CheckOptions, keep_bytes: bool = False,
                   renamed: Optional[Counter] = None) -> tuple[dict, list[str]]:
    """(the splits' SplitInputs with every reader Problem kept, the class names of a converted folder's classes.json).

    `renamed` counts, per split, the boxes --merge-classes renamed.
    """
    splits = list(opts.splits)
    known: list[str] = []
    if opts.fmt == CONVERTED:
        directory = opts.source.data_dir or ""
        known = [opts.merge_classes.get(c, c) for c in read_classes(directory)]
        splits = splits or list_splits(directory)
        if not splits:
            raise DatasetError(f"{directory}: no .tfrecord shards (not a `detkit dataset transform` output)")
    check_source(opts.fmt, splits, opts.source)
    check_merges(opts.merge_classes)
    # Records carry their image bytes: drop them at once when no image is checked, to hold only the labels.
    drop_bytes = opts.fmt == CONVERTED and not opts.images and not keep_bytes

    inputs = {}
    for split in splits:
        def prepare(example: Example, split: str = split) -> Example:
            if opts.merge_classes:
                if renamed is not None:
                    renamed[split] += sum(c in opts.merge_classes for c in example.classes)
                example = dataclasses.replace(example, classes=tuple(opts.merge_classes.get(c, c)
                                                                     for c in example.classes))
            return dataclasses.replace(example, image_bytes=None) if drop_bytes else example

        inputs.update(read_splits(opts.fmt, opts.source, [split], opts.only_classes, keep_problems=True,
                                  adjust=prepare))
    return inputs, sorted(set(known))


def check_merges(merges: Mapping[str, str]) -> None:
    """Refuse --merge-classes that chain (a=b, b=c) or map a name to itself."""
    for source, target in merges.items():
        if not source or not target or source == target:
            raise DatasetError(f"--merge-classes {source}={target}: give two different class names, FROM=TO")
        if target in merges:
            raise DatasetError(f"--merge-classes: {target!r} is merged into {merges[target]!r} too; "
                               f"merge {source!r} into {merges[target]!r} directly")


def parse_merges(values: Sequence[str]) -> dict[str, str]:
    """--merge-classes FROM=TO values (repeatable) as a mapping."""
    merges: dict[str, str] = {}
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise DatasetError(f"--merge-classes {value!r}: expected FROM=TO, e.g. --merge-classes Car=car")
        merges[source.strip()] = target.strip()
    check_merges(merges)
    return merges


def check_inputs(inputs: dict, fmt: str, skip_bad: bool = False, images: bool = True, workers: int = 2,
                 show_progress: bool = False, known_classes: Sequence[str] = ()) -> CheckReport:
    """The findings of read splits ({split: annotations.SplitInput}); `images` reads every image file once."""
    converted = fmt == CONVERTED
    flat = [(split, i, ex) for split, data in inputs.items() for i, ex in enumerate(data.examples)]
    facts: list = [None] * len(flat)
    if images and flat:
        bar = progress(total=len(flat), desc="check images", unit="img", disable=not show_progress)
        try:
            for k, (_, found) in enumerate(ordered_map(lambda item: read_facts(item[2]), flat, workers=workers)):
                facts[k] = found
                bar.update(1)
        finally:
            bar.close()
    findings: list[Finding] = []
    for split, data in inputs.items():
        findings += problem_findings(split, data.problems, skip_bad)
    for k, (split, i, ex) in enumerate(flat):
        findings += image_findings(split, i, ex, facts[k], converted, yolo=fmt == "yolo")
    if images:
        hashed = [k for k, f in enumerate(facts) if f is not None and not f.problem and f.phash is not None]
        near = [(hashed[a], hashed[b], bits)
                for a, b, bits in hamming_pairs([facts[k].phash for k in hashed], NEAR_DUPLICATE_BITS)]
        findings += duplicate_image_findings(flat, facts, near)
    counts: dict[str, SplitCounts] = {split: SplitCounts() for split in inputs}
    first_seen: dict[str, str] = {}
    for split, _, ex in flat:
        counts[split].images += 1
        counts[split].boxes += ex.num_boxes
        counts[split].classes.update(ex.classes)
        for name in ex.classes:
            first_seen.setdefault(name, ex.source)
    findings += class_findings({s: c.classes for s, c in counts.items()}, first_seen, known_classes)
    order = {kind: n for n, kind in enumerate(KINDS)}
    split_order = {split: n for n, split in enumerate(inputs)}
    findings.sort(key=lambda f: (order[f.kind], split_order.get(f.split, -1), f.index, f.box_index))
    return CheckReport(findings, counts, images, {(s, i): facts[k] for k, (s, i, _) in enumerate(flat)})


def check_counts(report: CheckReport, split: str) -> dict:
    """The check's counts for a split's summary: its own findings and those of every split (class names)."""
    mine = dataclasses.replace(report, findings=[f for f in report.findings if f.split in (split, "")])
    return mine.summary()


def failure_message(report: CheckReport, escape: str) -> str:
    """The one-line error when findings would break training."""
    errors = report.errors
    kinds = Counter(f.kind for f in errors)
    first = errors[0]
    return (f"dataset check: {len(errors)} finding{'s' if len(errors) > 1 else ''} would break training "
            f"({', '.join(f'{k} {n}' for k, n in kinds.items())}); first: {first.file}: {first.message}. "
            f"List them with `detkit dataset check` (same arguments), write a corrected copy with --fix OUT, or {escape}")


def check_for_training(dataset_dir: str, split: str) -> CheckReport:
    """The annotation check `detkit train --dataset-dir` runs on its training split; CheckFailed on errors."""
    report = check(CheckOptions(fmt=CONVERTED, splits=[split], source=Source(data_dir=dataset_dir), images=False))
    if report.errors:
        raise CheckFailed(failure_message(report, "train as it is with --no-check"), report)
    return report


def check_before_training(dataset_dir: str, split: str, log: Callable[[str], None]) -> CheckReport:
    """`check_for_training` with its summary line logged, or its findings (at most five per kind) before CheckFailed."""
    try:
        report = check_for_training(dataset_dir, split)
    except CheckFailed as exc:
        log(format_text(exc.report, limit=5))
        raise
    log(summary_line(report))
    return report


__all__ = ["CheckFailed", "CheckOptions", "CheckReport", "ERROR", "Finding", "KINDS", "check", "check_before_training",
           "check_counts", "check_for_training",
           "check_inputs", "failure_message", "parse_merges"]
