"""`detkit dataset merge`: combine splits of several converted datasets, relabelling by class name."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from detkit.datasets.classes import classes_path, label_map, read_classes, reconcile, sorted_classes
from detkit.datasets.output import Staging, check_split_name, check_writable
from detkit.datasets.tfrecord import LABEL, TEXT, ShardWriter, find_shards, list_splits, read_records, shard_name
from detkit.errors import DatasetError
from detkit.utils.progress import progress
from detkit.utils.tf_quiet import import_tensorflow


@dataclass
class MergeOptions:
    """Everything `detkit dataset merge` takes."""

    inputs: Sequence[str]
    output_dir: str
    splits: Optional[Sequence[str]] = None  # None = every split found in any input
    overwrite: bool = False
    num_shards: Optional[int] = None
    shard_size: Optional[int] = None
    show_progress: bool = False


@dataclass
class _Counts:
    """Counts for one merged split."""

    images: int = 0
    negatives: int = 0
    boxes: Counter = field(default_factory=Counter)
    filenames: Counter = field(default_factory=Counter)
    sources: list[dict] = field(default_factory=list)


def merge(opts: MergeOptions) -> dict[str, dict]:
    """Merge the splits of `opts.inputs` into `opts.output_dir`; the summary of each split."""
    inputs = _check_inputs(opts)
    input_classes = {d: read_classes(d) for d in inputs}
    available = {d: list_splits(d) for d in inputs}
    splits = list(opts.splits) if opts.splits else sorted(set().union(*available.values()))
    for split in splits:
        check_split_name(split)
        if not any(split in s for s in available.values()):
            listing = "; ".join(f"{d}: {', '.join(names) or 'none'}" for d, names in available.items())
            raise DatasetError(f"split {split!r} is in none of the inputs ({listing})")
    check_writable(opts.output_dir, splits, opts.overwrite)
    classes = _class_map(input_classes, splits, opts.output_dir)
    with Staging(opts.output_dir, "merge") as staging:
        shards, summaries = {}, {}
        for split in splits:
            sources = [d for d in inputs if split in available[d]]
            shards[split], summaries[split] = _merge_split(split, sources, input_classes, classes, staging.dir, opts)
        staging.publish(shards, summaries, classes)
    return summaries


def _check_inputs(opts: MergeOptions) -> list[str]:
    """The input directories, each a converted dataset and none the output."""
    if not opts.inputs:
        raise DatasetError("give at least one input directory")
    if opts.num_shards is not None and opts.shard_size is not None:
        raise DatasetError("give --num-shards or --shard-size, not both")
    out = os.path.realpath(opts.output_dir)
    seen: set[str] = set()
    for d in opts.inputs:
        if not os.path.isdir(d):
            raise DatasetError(f"input directory {d} not found")
        if os.path.realpath(d) == out:
            raise DatasetError(f"input {d} is also the --output-dir; write the merge to a new directory")
        if os.path.realpath(d) in seen:
            raise DatasetError(f"input {d} given twice")
        seen.add(os.path.realpath(d))
    return list(opts.inputs)


def _class_map(input_classes: dict[str, list[str]], splits: Sequence[str], out_dir: str) -> list[str]:
    """The sorted union of the inputs' class names, consistent with splits already in the output."""
    new = sorted_classes(c for names in input_classes.values() for c in names)
    kept = [s for s in list_splits(out_dir) if s not in splits]
    existing = read_classes(out_dir) if kept and os.path.exists(classes_path(out_dir)) else None
    return reconcile(new, existing, kept, out_dir)


def _merge_split(split: str, sources: list[str], input_classes: dict[str, list[str]], classes: list[str],
                 staging_dir: str, opts: MergeOptions) -> tuple[list[str], dict]:
    """Copy the records of `split` from each source with labels remapped; (staged shards, summary)."""
    tf = import_tensorflow()
    new_label = label_map(classes)
    counts = _Counts()
    writer = ShardWriter(staging_dir, split, num_shards=opts.num_shards, shard_size=opts.shard_size)
    try:
        for src in sources:
            remap = {i + 1: new_label[name] for i, name in enumerate(input_classes[src])}
            paths = find_shards(src, split)
            n = 0
            for record in progress(read_records(paths), desc=f"{split} <- {src}", unit="img",
                                   disable=not opts.show_progress):
                example = tf.train.Example.FromString(record)
                writer.write(_relabel(example, remap, classes, src, split, n).SerializeToString())
                _count(counts, example, classes)
                n += 1
            counts.sources.append({"directory": src, "images": n})
    finally:
        paths = writer.close()
    if not counts.images:
        raise DatasetError(f"split {split!r}: the inputs hold no records")
    duplicates = sorted(f for f, k in counts.filenames.items() if k > 1)
    summary = {
        "split": split,
        "type": "merge",
        "sources": counts.sources,
        "images": counts.images,
        "negatives": counts.negatives,
        "boxes": sum(counts.boxes.values()),
        "boxes_per_class": {c: counts.boxes[c] for c in classes},
        "duplicate_filenames": duplicates[:1000],
        "classes": classes,
        "shards": [shard_name(split, i, len(paths)) for i in range(len(paths))],
    }
    return paths, summary


def _relabel(example: Any, remap: dict[int, int], classes: list[str], src: str, split: str, index: int) -> Any:
    """The tf.train.Example with labels (and class texts) of the merged class map, in place."""
    feature = example.features.feature
    old = list(feature[LABEL].int64_list.value)
    try:
        new = [remap[label] for label in old]
    except KeyError as exc:
        raise DatasetError(f"{src}: split {split!r} record {index}: label {exc.args[0]} is not in "
                           f"{classes_path(src)}") from None
    feature[LABEL].int64_list.value[:] = new
    del feature[TEXT].bytes_list.value[:]
    feature[TEXT].bytes_list.value.extend(classes[label - 1].encode() for label in new)
    return example


def _count(counts: _Counts, example: Any, classes: list[str]) -> None:
    """Count a merged record (its labels already remapped)."""
    feature = example.features.feature
    labels = list(feature[LABEL].int64_list.value)
    counts.images += 1
    counts.negatives += not labels
    counts.boxes.update(classes[label - 1] for label in labels)
    names = feature["image/filename"].bytes_list.value
    counts.filenames[names[0].decode() if names else ""] += 1
