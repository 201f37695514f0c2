"""A `detkit dataset transform` output read back as a source: each record an Example with its image bytes.

Records are read with protobuf, without running a TensorFlow op, so `detkit train` can check its data before a
multi-worker strategy starts. Boxes come back in pixels of the stored image.
"""
from __future__ import annotations

from typing import Any, Iterator

from detkit.datasets import tfrecord as keys
from detkit.datasets.classes import read_classes
from detkit.datasets.example import Example, Problem, ReaderItem
from detkit.datasets.readers.common import Source
from detkit.datasets.tfrecord import find_shards
from detkit.errors import DatasetError
from detkit.utils.tf_quiet import import_tensorflow


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield the records of `split` in shard order; a record with a label outside classes.json is a Problem."""
    directory = source.data_dir or ""
    classes = read_classes(directory)
    for path, index, record in iter_serialized(directory, split):
        yield record_example(record, f"{path} record {index}", classes)


def iter_serialized(directory: str, split: str) -> Iterator[tuple[str, int, bytes]]:
    """(shard path, record index in the split, serialized record), checking each record's CRC."""
    tf = import_tensorflow()
    index = 0
    for path in find_shards(directory, split):
        try:
            for record in tf.compat.v1.io.tf_record_iterator(path):
                yield path, index, record
                index += 1
        except tf.errors.OpError as exc:
            raise DatasetError(f"{path}: corrupt TFRecord file after record {index} ({exc.message.splitlines()[0]});"
                               " convert it again with `detkit dataset transform ... --overwrite`") from None


def record_example(serialized: bytes, where: str, classes: list[str]) -> ReaderItem:
    """One serialized tf.train.Example as an Example with pixel boxes and its image bytes."""
    tf = import_tensorflow()
    try:
        feature = tf.train.Example.FromString(serialized).features.feature
    except Exception as exc:  # protobuf's DecodeError: not a tf.train.Example
        return Problem(where, f"not a tf.train.Example ({exc})")

    def values(key: str) -> list[Any]:
        """The values of a feature, whichever list it holds; [] when absent."""
        if key not in feature:
            return []
        kind = feature[key].WhichOneof("kind")
        return list(getattr(feature[key], kind).value) if kind else []

    def one(key: str, default: Any) -> Any:
        found = values(key)
        return found[0] if found else default

    width, height = int(one(keys.WIDTH, 0)), int(one(keys.HEIGHT, 0))
    if width < 1 or height < 1:
        return Problem(where, f"image/width and image/height must be positive, got {width}x{height}")
    coords = [values(k) for k in (keys.XMIN, keys.YMIN, keys.XMAX, keys.YMAX)]
    labels = [int(v) for v in values(keys.LABEL)]
    n = len(labels)
    if any(len(c) != n for c in coords):
        return Problem(where, f"{n} labels but {[len(c) for c in coords]} box coordinates")
    bad = [label for label in labels if not 1 <= label <= len(classes)]
    if bad:
        return Problem(where, f"label {bad[0]} is not in classes.json ({len(classes)} classes, labels 1 to "
                              f"{len(classes)})")
    # Records from other tools may omit the flags: they default to 0 per box, as in tfrecord.parse_example.
    difficult = values(keys.DIFFICULT) if len(values(keys.DIFFICULT)) == n else [0] * n
    crowd = values(keys.IS_CROWD) if len(values(keys.IS_CROWD)) == n else [0] * n
    name = one(keys.FILENAME, b"").decode("utf-8", "replace")
    boxes = tuple((float(x0) * width, float(y0) * height, float(x1) * width, float(y1) * height)
                  for x0, y0, x1, y1 in zip(*coords))
    return Example(
        filename=name, image_path=f"{where} ({name})", source=where, source_id=one(keys.SOURCE_ID, b"").decode("utf-8", "replace"),
        width=width, height=height, boxes=boxes, classes=tuple(classes[label - 1] for label in labels),
        difficult=tuple(bool(d) for d in difficult), is_crowd=tuple(bool(c) for c in crowd),
        image_bytes=one(keys.ENCODED, b""), format=one(keys.FORMAT, b"jpeg").decode("ascii", "replace"),
    )
