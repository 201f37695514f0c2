"""TFRecord files with the TF Object Detection API feature keys: encoding, sharded writing, finding, parsing."""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterator, Mapping, Optional

from detkit.datasets.example import Example
from detkit.errors import DatasetError
from detkit.utils.tf_quiet import import_tensorflow

# TF Object Detection API keys (create_pascal_tf_record.py / create_coco_tf_record.py).
ENCODED = "image/encoded"
FORMAT = "image/format"
FILENAME = "image/filename"
SOURCE_ID = "image/source_id"
HEIGHT = "image/height"
WIDTH = "image/width"
XMIN, YMIN = "image/object/bbox/xmin", "image/object/bbox/ymin"
XMAX, YMAX = "image/object/bbox/xmax", "image/object/bbox/ymax"
LABEL = "image/object/class/label"
TEXT = "image/object/class/text"
DIFFICULT = "image/object/difficult"
IS_CROWD = "image/object/is_crowd"

SHARD_PATTERN = r"-(\d{5})-of-(\d{5})\.tfrecord"
SHARD_RE = re.compile(r"^(.+)" + SHARD_PATTERN + "$")


def _tf() -> Any:
    """TensorFlow, imported quietly on first use (the CLI stays fast for --help and input errors)."""
    return import_tensorflow()


def shard_name(split: str, index: int, count: int) -> str:
    """`<split>-00000-of-00003.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def encode_example(example: Example, labels: Mapping[str, int]) -> bytes:
    """A serialized tf.train.Example of a loaded Example; pixel boxes become [0, 1] fractions."""
    if example.image_bytes is None or not example.format:
        raise ValueError(f"{example.source}: image not loaded")
    tf = _tf()
    w, h = float(example.width), float(example.height)

    def floats(values: list[float]) -> Any:
        """A float_list feature."""
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values: list[int]) -> Any:
        """An int64_list feature."""
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values: list[bytes]) -> Any:
        """A bytes_list feature."""
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    boxes = example.boxes
    feature = {
        ENCODED: strings([example.image_bytes]),
        FORMAT: strings([example.format.encode()]),
        FILENAME: strings([example.filename.encode()]),
        SOURCE_ID: strings([(example.source_id or example.filename).encode()]),
        HEIGHT: ints([example.height]),
        WIDTH: ints([example.width]),
        XMIN: floats([b[0] / w for b in boxes]),
        YMIN: floats([b[1] / h for b in boxes]),
        XMAX: floats([b[2] / w for b in boxes]),
        YMAX: floats([b[3] / h for b in boxes]),
        LABEL: ints([labels[c] for c in example.classes]),
        TEXT: strings([c.encode() for c in example.classes]),
        DIFFICULT: ints([int(d) for d in example.difficult]),
        IS_CROWD: ints([int(c) for c in example.is_crowd]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ShardWriter:
    """Writes records of one split to numbered temporary files in a staging directory.

    With `num_shards`, records go round-robin to that many files; with `shard_size`, a new file
    starts every `shard_size` records. Files are opened on first use, so none is empty.
    """

    def __init__(self, staging_dir: str, split: str, num_shards: Optional[int] = None,
                 shard_size: Optional[int] = None):
        """Prepare to write; no file is created before the first record."""
        if num_shards is not None and shard_size is not None:
            raise ValueError("give num_shards or shard_size, not both")
        self._tf = _tf()
        self.staging_dir = staging_dir
        self.split = split
        self.num_shards = num_shards
        self.shard_size = shard_size or (None if num_shards else 1000)
        self.count = 0
        self._writers: list[Any] = []
        self.paths: list[str] = []

    def write(self, record: bytes) -> None:
        """Append one serialized record."""
        index = self.count % self.num_shards if self.num_shards else self.count // self.shard_size
        try:
            while index >= len(self._writers):
                path = os.path.join(self.staging_dir, f"{self.split}.part-{len(self._writers):05d}")
                self._writers.append(self._tf.io.TFRecordWriter(path))
                self.paths.append(path)
            self._writers[index].write(record)
        except self._tf.errors.OpError as exc:  # e.g. a full disk: an OSError, as for any other write
            raise OSError(exc.message.splitlines()[0]) from None
        self.count += 1

    def close(self) -> list[str]:
        """Flush and close every file; their paths in shard order."""
        try:
            for writer in self._writers:
                writer.close()
        except self._tf.errors.OpError as exc:
            raise OSError(exc.message.splitlines()[0]) from None
        self._writers = []
        return list(self.paths)


def list_splits(directory: str) -> list[str]:
    """The split names that have shards in `directory`."""
    if not os.path.isdir(directory):
        return []
    return sorted({m.group(1) for m in map(SHARD_RE.match, os.listdir(directory)) if m})


def find_shards(directory: str, split: str) -> list[str]:
    """The shard paths of `split` in `directory`, checked to be the complete set N of N."""
    if not os.path.isdir(directory):
        raise DatasetError(f"dataset directory {directory} not found")
    pattern = re.compile("^" + re.escape(split) + SHARD_PATTERN + "$")
    found: dict[int, dict[int, str]] = {}
    for name in os.listdir(directory):
        m = pattern.match(name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = os.path.join(directory, name)
    if not found:
        available = list_splits(directory)
        hint = f"splits available: {', '.join(available)}" if available else "no .tfrecord shards there"
        raise DatasetError(f"{directory}: no shards of split {split!r} ({hint})")
    if len(found) > 1:
        raise DatasetError(f"{directory}: split {split!r} has shards of different sets ({sorted(found)} files); "
                           "convert it again with --overwrite")
    total, shards = next(iter(found.items()))
    if sorted(shards) != list(range(total)):
        raise DatasetError(f"{directory}: split {split!r} is incomplete: {len(shards)} of {total} shards "
                           f"(e.g. {shard_name(split, min(set(range(total)) - set(shards)), total)} is missing)")
    return [shards[i] for i in range(total)]


def _shard_records(paths: list[str], parse: Optional[Callable[[Any], Any]] = None) -> Iterator[Any]:
    """The records of the shard files in order, parsed by `parse` in tf.data when given; a DatasetError names
    a corrupt shard."""
    tf = _tf()
    for path in paths:
        ds = tf.data.TFRecordDataset(path)
        try:
            yield from (ds if parse is None else ds.map(parse)).as_numpy_iterator()
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise DatasetError(f"{path}: corrupt TFRecord file ({exc.message.splitlines()[0]}); convert it again "
                               "with `detkit dataset transform ... --overwrite`") from None


def read_records(paths: list[str]) -> Iterator[bytes]:
    """The serialized records of the shard files, in order; a DatasetError names a corrupt shard."""
    return _shard_records(paths)


def iter_records(directory: str, split: str, with_images: bool = False) -> Iterator[dict[str, Any]]:
    """Parsed records of a split as numpy values (keys of `parse_example`), shard by shard; the image bytes only
    when asked for."""
    def parse(serialized: Any) -> dict[str, Any]:
        parsed = parse_example(serialized)
        return parsed if with_images else {k: v for k, v in parsed.items() if k != "image"}

    return _shard_records(find_shards(directory, split), parse)


def data_loss_error(directory: str, split: str, exc: Exception) -> DatasetError:
    """The error for a DataLossError met while streaming a split: names the corrupt shard when it finds it."""
    try:
        for _ in read_records(find_shards(directory, split)):
            pass
    except DatasetError as named:
        return named
    first = str(getattr(exc, "message", exc)).strip().splitlines()[0][:160]
    return DatasetError(f"{directory}: split {split!r} has a corrupt record ({first}); convert it again with "
                        "`detkit dataset transform ... --overwrite`")


def parse_example(serialized: Any) -> dict[str, Any]:
    """Parse one serialized record (a scalar tf.string) into tensors; usable eagerly and in tf.data.map.

    Returns a dict with exactly these keys (N = number of boxes, 0 for negative images):
      "image":       tf.string []      the encoded JPEG/PNG bytes (decode with channels=3)
      "format":      tf.string []      b"jpeg" or b"png"
      "filename":    tf.string []
      "source_id":   tf.string []
      "height":      tf.int64  []      stored pixel size of the image
      "width":       tf.int64  []
      "boxes":       tf.float32 [N, 4] (xmin, ymin, xmax, ymax), normalised to [0, 1]
      "labels":      tf.int64  [N]     1-based: label i+1 = classes.json[i]; 0 is background
      "label_text":  tf.string [N]     class names
      "difficult":   tf.bool   [N]     VOC difficult flag (False when absent)
      "is_crowd":    tf.bool   [N]     COCO iscrowd flag (False when absent)
    """
    tf = _tf()
    spec = {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
        FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
        SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        XMIN: tf.io.VarLenFeature(tf.float32),
        YMIN: tf.io.VarLenFeature(tf.float32),
        XMAX: tf.io.VarLenFeature(tf.float32),
        YMAX: tf.io.VarLenFeature(tf.float32),
        LABEL: tf.io.VarLenFeature(tf.int64),
        TEXT: tf.io.VarLenFeature(tf.string),
        DIFFICULT: tf.io.VarLenFeature(tf.int64),
        IS_CROWD: tf.io.VarLenFeature(tf.int64),
    }
    f = tf.io.parse_single_example(serialized, spec)
    dense = {k: tf.sparse.to_dense(v) for k, v in f.items() if isinstance(v, tf.sparse.SparseTensor)}
    boxes = tf.stack([dense[XMIN], dense[YMIN], dense[XMAX], dense[YMAX]], axis=1)
    n = tf.shape(boxes)[0]

    def per_box(values: Any, fill: Any) -> Any:
        """`values` if it has one entry per box, else `fill` repeated."""
        # Records from other tools may omit difficult/is_crowd/text: default them per box.
        return tf.cond(tf.equal(tf.size(values), n), lambda: values, lambda: tf.fill([n], fill))

    return {
        "image": f[ENCODED],
        "format": f[FORMAT],
        "filename": f[FILENAME],
        "source_id": f[SOURCE_ID],
        "height": f[HEIGHT],
        "width": f[WIDTH],
        "boxes": tf.reshape(boxes, [-1, 4]),
        "labels": dense[LABEL],
        "label_text": per_box(dense[TEXT], tf.constant("", tf.string)),
        "difficult": tf.cast(per_box(dense[DIFFICULT], tf.constant(0, tf.int64)), tf.bool),
        "is_crowd": tf.cast(per_box(dense[IS_CROWD], tf.constant(0, tf.int64)), tf.bool),
    }
