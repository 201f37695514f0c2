"""--only-classes, --class-examples, --limit-examples, negatives, and box clipping/dropping."""
from __future__ import annotations

import numpy as np
import pytest

from detkit.errors import DatasetError


@pytest.fixture
def pets(tmp_path, helpers):
    """A flat VOC set: a has cat+dog, b has dog, c has cat x2, d has nothing, e has cat."""
    root = tmp_path / "pets"
    layout = {"a": [("cat", (1, 1, 10, 10)), ("dog", (20, 20, 40, 40))], "b": [("dog", (5, 5, 15, 15))],
              "c": [("cat", (1, 1, 5, 5)), ("cat", (6, 6, 12, 12))], "d": [], "e": [("cat", (2, 2, 9, 9))]}
    for name, objects in layout.items():
        helpers.make_image(root / "images" / f"{name}.jpg")
        helpers.write_voc(root / "annotations" / f"{name}.xml", f"{name}.jpg", (64, 48), objects)
    return root


def _convert(cli, root, out, *extra):
    cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "train", "--output-dir", out, *extra)


def test_only_classes_drops_other_boxes_and_keeps_negatives(pets, tmp_path, cli, helpers):
    out = tmp_path / "out"
    _convert(cli, pets, out, "--only-classes", "dog")
    assert helpers.classes(out) == ["dog"]
    recs = {r["filename"].decode(): r for r in helpers.records(out, "train")}
    assert sorted(recs) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]  # cat-only images become negatives
    np.testing.assert_array_equal(recs["a.jpg"]["labels"], [1])
    np.testing.assert_allclose(recs["a.jpg"]["boxes"], [[20 / 64, 20 / 48, 40 / 64, 40 / 48]], atol=1e-6)
    assert recs["c.jpg"]["labels"].shape == (0,)
    s = helpers.summary(out, "train")
    assert (s["images"], s["negatives"], s["filtered_boxes"], s["boxes_per_class"]) == (5, 3, 4, {"dog": 2})


def test_only_classes_unknown_name_is_an_error(pets, tmp_path, cli):
    err = cli("dataset", "transform", "--type", "voc", "--data-dir", pets, "--split", "train",
              "--output-dir", tmp_path / "o", "--only-classes", "dog,hamster", error=DatasetError)
    assert "hamster not found" in str(err) and "cat, dog" in str(err)


def test_class_examples_caps_boxes_per_class(pets, tmp_path, cli, helpers):
    out = tmp_path / "out"
    _convert(cli, pets, out, "--class-examples", "2")
    recs = helpers.records(out, "train")
    # a (cat 1, dog 1) in; b (dog 2) in; c would make cat 3: left out whole; d negative in; e (cat 2) in.
    assert [r["filename"] for r in recs] == [b"a.jpg", b"b.jpg", b"d.jpg", b"e.jpg"]
    s = helpers.summary(out, "train")
    assert s["boxes_per_class"] == {"cat": 2, "dog": 2}
    assert (s["images_over_class_cap"], s["negatives"]) == (1, 1)


def test_limit_examples(pets, tmp_path, cli, helpers):
    out = tmp_path / "out"
    _convert(cli, pets, out, "--limit-examples", "2")
    assert [r["filename"] for r in helpers.records(out, "train")] == [b"a.jpg", b"b.jpg"]


def test_negatives_are_kept_in_every_format(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "pos.jpg")
    helpers.make_image(tmp_path / "im" / "neg.jpg")
    csv_path = helpers.write_csv(tmp_path / "l.csv", [("pos.jpg", 64, 48, "cat", 1, 1, 9, 9),
                                                      ("neg.jpg", 64, 48, "", "", "", "", "")])
    coco_path = helpers.write_coco(tmp_path / "l.json", [{"id": 1, "file_name": "pos.jpg"}, {"id": 2, "file_name": "neg.jpg"}],
                                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]}],
                                   [{"id": 1, "name": "cat"}])
    helpers.write_voc(tmp_path / "voc" / "pos.xml", "pos.jpg", (64, 48), [("cat", (1, 1, 9, 9))])
    helpers.write_voc(tmp_path / "voc" / "neg.xml", "neg.jpg", (64, 48), [])
    for fmt, ann in (("csv", csv_path), ("coco", coco_path), ("voc", tmp_path / "voc")):
        out = tmp_path / f"o_{fmt}"
        cli("dataset", "transform", "--type", fmt, "--annotations", ann, "--images-dir", tmp_path / "im",
            "--split", "s", "--output-dir", out)
        s = helpers.summary(out, "s")
        assert (s["images"], s["negatives"], s["boxes"]) == (2, 1, 1), fmt
        neg = [r for r in helpers.records(out, "s") if r["filename"] == b"neg.jpg"][0]
        assert neg["boxes"].shape == (0, 4) and neg["labels"].shape == (0,)


def test_boxes_are_clipped_or_dropped_and_counted(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg", size=(100, 50))
    rows = [("a.jpg", 100, 50, "cat", -10, 5, 50, 60),    # clipped to 0,5,50,50
            ("a.jpg", 100, 50, "cat", 90, 40, 120, 45),   # clipped to 90,40,100,45
            ("a.jpg", 100, 50, "cat", 10, 10, 10, 20),    # zero width: dropped
            ("a.jpg", 100, 50, "cat", 30, 30, 20, 40),    # inverted: dropped
            ("a.jpg", 100, 50, "cat", 150, 10, 160, 20),  # wholly outside: dropped
            ("a.jpg", 100, 50, "cat", 1, 1, 99, 49)]      # fine
    ann = helpers.write_csv(tmp_path / "l.csv", rows)
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
        "--split", "s", "--output-dir", out)
    rec = helpers.records(out, "s")[0]
    np.testing.assert_allclose(rec["boxes"], [[0, 0.1, 0.5, 1.0], [0.9, 0.8, 1.0, 0.9], [0.01, 0.02, 0.99, 0.98]],
                               atol=1e-6)
    s = helpers.summary(out, "s")
    assert (s["clipped_boxes"], s["dropped_boxes"], s["boxes"]) == (2, 3, 3)
    assert sorted(d["reason"].split(" ")[0] for d in s["dropped_box_details"]) == ["inverted", "outside", "zero"]


def test_image_with_only_invalid_boxes_is_kept_as_negative(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    ann = helpers.write_csv(tmp_path / "l.csv", [("a.jpg", 64, 48, "cat", 5, 5, 5, 5)])
    cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
        "--split", "s", "--output-dir", tmp_path / "o")
    s = helpers.summary(tmp_path / "o", "s")
    assert (s["images"], s["negatives"], s["dropped_boxes"]) == (1, 1, 1)
    assert helpers.classes(tmp_path / "o") == ["cat"]
