"""`detkit dataset inspect` statistics and drawings, and `detkit dataset merge`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detkit.errors import DatasetError


@pytest.fixture
def small_set(tmp_path, helpers):
    """a: 100x50 with cat (10,10,30,20) difficult + dog (0,0,100,50); b: 200x100 with cat (50,50,150,100); c: negative."""
    root = tmp_path / "src"
    helpers.make_image(root / "images" / "a.jpg", size=(100, 50), color=(250, 250, 250))
    helpers.make_image(root / "images" / "b.png", size=(200, 100), fmt="PNG", color=(5, 5, 5))
    helpers.make_image(root / "images" / "c.jpg", size=(60, 40))
    helpers.write_voc(root / "annotations" / "a.xml", "a.jpg", (100, 50),
                      [("cat", (10, 10, 30, 20), 1), ("dog", (0, 0, 100, 50))])
    helpers.write_voc(root / "annotations" / "b.xml", "b.png", (200, 100), [("cat", (50, 50, 150, 100))])
    helpers.write_voc(root / "annotations" / "c.xml", "c.jpg", (60, 40), [])
    return root


def _convert(cli, root, out, split="train"):
    cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", split, "--output-dir", out)


def test_inspect_json_statistics(small_set, tmp_path, cli):
    out = tmp_path / "out"
    _convert(cli, small_set, out)
    stats = json.loads(cli("dataset", "inspect", out, "--split", "train", "--json").stdout)
    assert (stats["images"], stats["negatives"], stats["boxes"]) == (3, 1, 3)
    assert stats["formats"] == {"jpeg": 2, "png": 1}
    assert stats["classes"] == {"cat": {"label": 1, "boxes": 2, "images": 2, "difficult": 1, "crowd": 0},
                                "dog": {"label": 2, "boxes": 1, "images": 1, "difficult": 0, "crowd": 0}}
    assert stats["image_width"] == {"min": 60.0, "mean": 120.0, "median": 100.0, "max": 200.0}
    assert stats["box_width"] == {"min": 20.0, "mean": pytest.approx(73.333, abs=1e-3), "median": 100.0, "max": 100.0}
    assert stats["box_height"]["min"] == 10.0 and stats["box_height"]["max"] == 50.0
    assert stats["boxes_per_image"] == {"min": 0.0, "mean": 1.0, "median": 1.0, "max": 2.0}
    assert stats["boxes_smaller_than_16px"] == 1
    assert stats["invalid_labels"] == 0


def test_inspect_text_report_and_draw(small_set, tmp_path, cli):
    out = tmp_path / "out"
    _convert(cli, small_set, out)
    draw_dir = tmp_path / "drawn"
    text = cli("dataset", "inspect", out, "--split", "train", "--draw", "2", "--draw-dir", draw_dir).stdout
    assert "split train: 3 images (1 without boxes), 3 boxes" in text
    assert any(line.split()[:4] == ["1", "cat", "2", "2"] for line in text.splitlines())
    drawn = sorted(p.name for p in draw_dir.iterdir())
    assert drawn == ["train-0000-a.jpg", "train-0001-b.jpg"]
    # Boxes must show on the light image and on the dark one.
    for name, size, background in (("train-0000-a.jpg", (100, 50), 250), ("train-0001-b.jpg", (200, 100), 5)):
        px = np.asarray(Image.open(draw_dir / name).convert("RGB")).astype(int)
        assert px.shape == (size[1], size[0], 3)
        changed = np.abs(px - background).sum(axis=-1) > 60
        assert changed.mean() > 0.02, name


def test_inspect_missing_split_is_an_error(small_set, tmp_path, cli):
    out = tmp_path / "out"
    _convert(cli, small_set, out)
    err = cli("dataset", "inspect", out, "--split", "val", error=DatasetError)
    assert "no shards of split 'val' (splits available: train)" in str(err)


def test_merge_unifies_class_maps_by_name(tmp_path, cli, helpers):
    a, b = tmp_path / "a", tmp_path / "b"
    helpers.make_image(a / "im" / "1.jpg")
    helpers.make_image(b / "im" / "2.jpg")
    helpers.make_image(b / "im" / "3.jpg")
    ann_a = helpers.write_csv(a / "l.csv", [("1.jpg", 64, 48, "dog", 1, 1, 9, 9), ("1.jpg", 64, 48, "cat", 2, 2, 8, 8)])
    ann_b = helpers.write_csv(b / "l.csv", [("2.jpg", 64, 48, "dog", 1, 1, 9, 9), ("3.jpg", 64, 48, "bird", 3, 3, 9, 9)])
    for src, ann, split in ((a, ann_a, "train"), (b, ann_b, "train"), (b, ann_b, "test")):
        cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", src / "im",
            "--split", split, "--output-dir", src / "out", "--overwrite")
    assert helpers.classes(a / "out") == ["cat", "dog"] and helpers.classes(b / "out") == ["bird", "dog"]

    merged = tmp_path / "merged"
    cli("dataset", "merge", a / "out", b / "out", "--output-dir", merged)
    assert helpers.classes(merged) == ["bird", "cat", "dog"]
    recs = {r["filename"].decode(): r for r in helpers.records(merged, "train")}
    assert sorted(recs) == ["1.jpg", "2.jpg", "3.jpg"]
    assert recs["1.jpg"]["labels"].tolist() == [3, 2] and recs["1.jpg"]["label_text"].tolist() == [b"dog", b"cat"]
    assert recs["2.jpg"]["labels"].tolist() == [3]
    assert recs["3.jpg"]["labels"].tolist() == [1] and recs["3.jpg"]["label_text"].tolist() == [b"bird"]
    np.testing.assert_allclose(recs["1.jpg"]["boxes"], [[1 / 64, 1 / 48, 9 / 64, 9 / 48], [2 / 64, 2 / 48, 8 / 64, 8 / 48]],
                               atol=1e-6)
    assert recs["1.jpg"]["image"] == (a / "im" / "1.jpg").read_bytes()
    s = helpers.summary(merged, "train")
    assert (s["images"], s["boxes_per_class"]) == (3, {"bird": 1, "cat": 1, "dog": 2})
    assert [x["images"] for x in s["sources"]] == [1, 2]
    assert [r["filename"] for r in helpers.records(merged, "test")] == [b"2.jpg", b"3.jpg"]  # only b has test

    only = tmp_path / "only_test"
    cli("dataset", "merge", a / "out", b / "out", "--output-dir", only, "--split", "test")
    assert sorted(p.name for p in only.iterdir()) == ["classes.json", "test-00000-of-00001.tfrecord", "test-summary.json"]
    err = cli("dataset", "merge", a / "out", b / "out", "--output-dir", merged, error=DatasetError)
    assert "already holds" in str(err)
    err = cli("dataset", "merge", a / "out", "--output-dir", a / "out", "--overwrite", error=DatasetError)
    assert "also the --output-dir" in str(err)
    err = cli("dataset", "merge", a / "out", b / "out", "--output-dir", tmp_path / "m3", "--split", "val",
              error=DatasetError)
    assert "split 'val' is in none of the inputs" in str(err)
