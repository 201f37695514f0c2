"""The annotations of a dataset's splits, read and filtered by class before any image is opened.

The first stage of `dataset transform`, `dataset check` and `dataset export`: the source described as the CLI
describes it (`readers.Source`), checked for contradictions, then every split read by its format's reader.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from detkit.datasets.example import Example, Problem, ReaderItem
from detkit.datasets.output import check_split_name
from detkit.datasets.readers import CONVERTED, FORMATS, Source, get_reader
from detkit.errors import DatasetError


@dataclass
class SplitInput:
    """The annotations of one split, read and filtered by class, before any image is opened."""

    examples: list[Example]
    problems: list[Problem]
    classes_seen: set[str]  # before --only-classes
    filtered_boxes: int = 0


def check_source(fmt: str, splits: Sequence[str], src: Source) -> None:
    """Refuse a format, split list or source description that cannot work, before reading anything."""
    if fmt not in FORMATS and fmt != CONVERTED:
        raise DatasetError(f"unknown dataset type {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not splits:
        raise DatasetError("give at least one --split")
    for split in splits:
        check_split_name(split)
    if len(set(splits)) != len(splits):
        raise DatasetError(f"--split given twice: {list(splits)}")
    if src.data_dir is not None and (src.annotations or src.images_dir):
        raise DatasetError("give --data-dir, or --annotations with --images-dir, not both")
    if src.data_dir is None and not (src.annotations and src.images_dir):
        raise DatasetError("give --data-dir, or both --annotations and --images-dir")
    if src.explicit and len(splits) > 1:
        raise DatasetError("--annotations/--images-dir describe one split: give exactly one --split")
    flat = _flat_layout(fmt, src.data_dir, splits) if src.data_dir and len(splits) > 1 else ""
    if flat:
        raise DatasetError(f"{src.data_dir}: the flat {flat} has no split files, so every annotation goes to the one "
                           "--split named; give exactly one")


def _flat_layout(fmt: str, data_dir: str, splits: Sequence[str]) -> str:
    """The name of `data_dir`'s layout if it holds one split only (flat VOC, LabelMe files without split folders)."""
    if fmt == "voc" and not os.path.isdir(os.path.join(data_dir, "Annotations")):
        return "VOC layout (annotations/ + images/, or XML beside each image)"
    if fmt == "labelme" and not any(os.path.isdir(os.path.join(data_dir, s)) for s in splits):
        return "LabelMe layout (JSON files without a folder per split)"
    return ""


def read_splits(fmt: str, source: Source, splits: Sequence[str], only_classes: Optional[Sequence[str]] = None,
                skip_bad: bool = False, keep_problems: bool = False,
                adjust: Optional[Callable[[Example], Example]] = None) -> dict[str, SplitInput]:
    """The annotations of every split, filtered by `only_classes` (--only-classes).

    A reader Problem is fatal unless `skip_bad` or `keep_problems` (the check lists them all); `adjust` maps
    each example as it is read, before classes are collected (--merge-classes).
    """
    read = get_reader(fmt)
    return {split: _read_split(read(source, split), split, only_classes, skip_bad or keep_problems, adjust)
            for split in splits}


def _read_split(items: Iterable[ReaderItem], split: str, only_classes: Optional[Sequence[str]] = None, keep_problems: bool = False,
               adjust: Optional[Callable[[Example], Example]] = None) -> SplitInput:
    """One split from a reader's items; a Problem is fatal unless `keep_problems`."""
    examples, problems, seen = [], [], set()
    for item in items:
        if isinstance(item, Problem):
            if not keep_problems:
                raise DatasetError(item.message() + " (use --skip-bad to skip it)")
            problems.append(item)
            continue
        item = adjust(item) if adjust else item
        examples.append(item)
        seen.update(item.classes)
    if not examples and not problems:
        raise DatasetError(f"split {split!r}: the annotations list no images")
    data = SplitInput(examples, problems, seen)
    if only_classes is not None:
        wanted = {c.strip() for c in only_classes if c.strip()}
        for i, ex in enumerate(data.examples):
            keep = [j for j, c in enumerate(ex.classes) if c in wanted]
            data.filtered_boxes += ex.num_boxes - len(keep)
            data.examples[i] = ex.keep_boxes(keep)
    return data
