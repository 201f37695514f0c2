"""The record format: parse_example's keys, dtypes and shapes; sharding; finding complete shard sets."""
from __future__ import annotations

import numpy as np
import pytest

from detkit.datasets.example import Example
from detkit.datasets.tfrecord import encode_example, find_shards, parse_example
from detkit.errors import DatasetError

KEYS = {"image", "format", "filename", "source_id", "height", "width", "boxes", "labels", "label_text",
        "difficult", "is_crowd"}


def _example(boxes=((10.0, 5.0, 30.0, 25.0), (0.0, 0.0, 40.0, 50.0))) -> Example:
    n = len(boxes)
    return Example(filename="a.jpg", image_path="", source="test", source_id="7", width=40, height=50,
                   boxes=tuple(boxes), classes=("dog", "cat")[:n], difficult=(True, False)[:n],
                   is_crowd=(False, True)[:n], image_bytes=b"\xff\xd8fake", format="jpeg")


def test_encoded_record_uses_object_detection_api_keys():
    import tensorflow as tf

    record = tf.train.Example.FromString(encode_example(_example(), {"cat": 1, "dog": 2}))
    f = record.features.feature
    assert sorted(f) == sorted([
        "image/encoded", "image/format", "image/filename", "image/source_id", "image/height", "image/width",
        "image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax",
        "image/object/class/label", "image/object/class/text", "image/object/difficult", "image/object/is_crowd"])
    assert f["image/encoded"].bytes_list.value == [b"\xff\xd8fake"]
    assert f["image/height"].int64_list.value == [50] and f["image/width"].int64_list.value == [40]
    assert list(f["image/object/bbox/xmin"].float_list.value) == pytest.approx([0.25, 0.0])
    assert list(f["image/object/bbox/ymax"].float_list.value) == pytest.approx([0.5, 1.0])
    assert f["image/object/class/label"].int64_list.value == [2, 1]
    assert f["image/object/class/text"].bytes_list.value == [b"dog", b"cat"]
    assert f["image/object/difficult"].int64_list.value == [1, 0]
    assert f["image/object/is_crowd"].int64_list.value == [0, 1]


def test_parse_example_keys_dtypes_shapes_eager_and_in_dataset():
    import tensorflow as tf

    serialized = encode_example(_example(), {"cat": 1, "dog": 2})
    out = parse_example(tf.constant(serialized))
    assert set(out) == KEYS
    assert out["image"].numpy() == b"\xff\xd8fake"
    assert (out["format"].numpy(), out["filename"].numpy(), out["source_id"].numpy()) == (b"jpeg", b"a.jpg", b"7")
    assert out["height"].dtype == tf.int64 and int(out["height"]) == 50 and int(out["width"]) == 40
    assert out["boxes"].dtype == tf.float32
    np.testing.assert_allclose(out["boxes"].numpy(), [[0.25, 0.1, 0.75, 0.5], [0, 0, 1, 1]], atol=1e-6)
    assert out["labels"].dtype == tf.int64 and out["labels"].numpy().tolist() == [2, 1]
    assert out["label_text"].numpy().tolist() == [b"dog", b"cat"]
    assert out["difficult"].dtype == tf.bool and out["difficult"].numpy().tolist() == [True, False]
    assert out["is_crowd"].dtype == tf.bool and out["is_crowd"].numpy().tolist() == [False, True]

    negative = encode_example(_example(boxes=()), {})
    ds = tf.data.Dataset.from_tensor_slices([serialized, negative]).map(parse_example)
    assert ds.element_spec["boxes"].shape.as_list() == [None, 4]
    first, second = list(ds.as_numpy_iterator())
    assert first["boxes"].shape == (2, 4)
    assert second["boxes"].shape == (0, 4) and second["labels"].shape == (0,) and second["difficult"].shape == (0,)


def test_parse_example_defaults_flags_missing_in_foreign_records():
    import tensorflow as tf

    record = tf.train.Example.FromString(encode_example(_example(), {"cat": 1, "dog": 2}))
    for key in ("image/object/difficult", "image/object/is_crowd", "image/object/class/text"):
        del record.features.feature[key]
    out = parse_example(tf.constant(record.SerializeToString()))
    assert out["difficult"].numpy().tolist() == [False, False]
    assert out["is_crowd"].numpy().tolist() == [False, False]
    assert out["label_text"].numpy().tolist() == [b"", b""]


@pytest.mark.parametrize("option, value, sizes", [("--num-shards", 3, [3, 2, 2]), ("--shard-size", 3, [3, 3, 1]),
                                                   ("--num-shards", 10, [1] * 7)])
def test_sharding(tmp_path, cli, helpers, option, value, sizes):
    for i in range(7):
        helpers.make_image(tmp_path / "im" / f"{i}.jpg")
    ann = helpers.write_csv(tmp_path / "l.csv", [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(7)])
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
        "--split", "train", "--output-dir", out, option, value)
    n = len(sizes)
    paths = find_shards(str(out), "train")
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"train-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    import tensorflow as tf

    assert [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in paths] == sizes
    assert sorted(r["filename"] for r in helpers.records(out, "train")) == sorted(f"{i}.jpg".encode() for i in range(7))


def test_find_shards_refuses_incomplete_or_missing_split(tmp_path, cli, helpers):
    for i in range(3):
        helpers.make_image(tmp_path / "im" / f"{i}.jpg")
    ann = helpers.write_csv(tmp_path / "l.csv", [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(3)])
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
        "--split", "train", "--output-dir", out, "--num-shards", "3")
    with pytest.raises(DatasetError, match="no shards of split 'test' \\(splits available: train\\)"):
        find_shards(str(out), "test")
    (out / "train-00001-of-00003.tfrecord").unlink()
    with pytest.raises(DatasetError, match="incomplete: 2 of 3 shards .*train-00001-of-00003.tfrecord is missing"):
        find_shards(str(out), "train")


def test_num_shards_and_shard_size_are_exclusive(tmp_path, cli):
    import click

    cli("dataset", "transform", "--type", "csv", "--annotations", tmp_path / "l.csv", "--images-dir", tmp_path,
        "--split", "s", "--output-dir", tmp_path / "o", "--num-shards", "2", "--shard-size", "5",
        error=click.UsageError)
