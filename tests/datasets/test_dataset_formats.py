"""Each annotation format and layout converts to the same TFRecords."""
from __future__ import annotations

import csv
import os

import numpy as np

from detkit.errors import DatasetError


def _by_filename(recs: list[dict]) -> dict[str, dict]:
    return {r["filename"].decode(): r for r in recs}


def test_raccoon_test_split_agrees_across_voc_csv_coco(raccoon, tmp_path, cli, helpers):
    with open(raccoon / "data" / "test_labels.csv", newline="") as fh:
        test_files = sorted({row["filename"] for row in csv.DictReader(fh)})
    assert len(test_files) == 40
    voc = tmp_path / "voc"
    (voc / "annotations").mkdir(parents=True)
    for name in test_files:
        stem = os.path.splitext(name)[0]
        os.symlink(raccoon / "annotations" / f"{stem}.xml", voc / "annotations" / f"{stem}.xml")
    os.symlink(raccoon / "images", voc / "images")

    cli("dataset", "transform", "--type", "voc", "--data-dir", voc, "--split", "test", "--output-dir", tmp_path / "o_voc")
    cli("dataset", "transform", "--type", "csv", "--annotations", raccoon / "data" / "test_labels.csv",
        "--images-dir", raccoon / "images", "--split", "test", "--output-dir", tmp_path / "o_csv")
    cli("dataset", "transform", "--type", "coco", "--annotations", raccoon / "coco" / "instances_test.json",
        "--images-dir", raccoon / "images", "--split", "test", "--output-dir", tmp_path / "o_coco")

    outs = {fmt: _by_filename(helpers.records(tmp_path / f"o_{fmt}", "test")) for fmt in ("voc", "csv", "coco")}
    for fmt in outs:
        assert sorted(outs[fmt]) == test_files, fmt
        assert helpers.classes(tmp_path / f"o_{fmt}") == ["raccoon"]
        s = helpers.summary(tmp_path / f"o_{fmt}", "test")
        assert (s["images"], s["boxes"], s["negatives"], s["skipped"]) == (40, 44, 0, [])
    for name in test_files:
        ref = outs["csv"][name]
        for fmt in ("voc", "coco"):
            rec = outs[fmt][name]
            np.testing.assert_allclose(rec["boxes"], ref["boxes"], atol=1e-6, err_msg=f"{fmt} {name}")
            np.testing.assert_array_equal(rec["labels"], ref["labels"])
            assert (rec["width"], rec["height"]) == (ref["width"], ref["height"])
            assert rec["image"] == ref["image"]
    # Real values: raccoon-146.jpg is 275x183 with one box 4,4,271,180; the bytes are the original file's.
    rec = outs["voc"]["raccoon-146.jpg"]
    assert (rec["width"], rec["height"]) == (275, 183)
    np.testing.assert_allclose(rec["boxes"], [[4 / 275, 4 / 183, 271 / 275, 180 / 183]], atol=1e-6)
    np.testing.assert_array_equal(rec["labels"], [1])
    assert rec["format"] == b"jpeg"
    assert rec["image"] == (raccoon / "images" / "raccoon-146.jpg").read_bytes()
    assert outs["coco"]["raccoon-146.jpg"]["source_id"] == b"1"  # COCO keeps its image id


def test_vocdevkit_layout_with_split_files(tmp_path, cli, helpers):
    root = tmp_path / "VOC2007"
    for i, objects in enumerate([[("dog", (1, 2, 30, 40)), ("cat", (5, 5, 20, 20), 1)],
                                 [("cat", (0, 0, 64, 48))],
                                 []]):
        helpers.make_image(root / "JPEGImages" / f"{i:06d}.jpg")
        helpers.write_voc(root / "Annotations" / f"{i:06d}.xml", f"{i:06d}.jpg", (64, 48), objects)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000000\n000002\n\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "train", "--split", "val",
        "--output-dir", out)
    assert helpers.classes(out) == ["cat", "dog"]  # sorted names, not order of appearance
    train = helpers.records(out, "train")
    assert [r["filename"] for r in train] == [b"000000.jpg", b"000002.jpg"]
    np.testing.assert_array_equal(train[0]["labels"], [2, 1])
    np.testing.assert_array_equal(train[0]["difficult"], [False, True])
    np.testing.assert_array_equal(train[0]["label_text"], [b"dog", b"cat"])
    np.testing.assert_allclose(train[0]["boxes"][0], [1 / 64, 2 / 48, 30 / 64, 40 / 48], atol=1e-6)
    assert train[1]["boxes"].shape == (0, 4)  # the image without objects is a negative
    val = helpers.records(out, "val")
    assert [r["filename"] for r in val] == [b"000001.jpg"]
    s = helpers.summary(out, "train")
    assert (s["images"], s["negatives"], s["difficult_boxes"], s["boxes_per_class"]) == (2, 1, 1, {"cat": 1, "dog": 1})
    assert s["shards"] == ["train-00000-of-00001.tfrecord"]
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.json", "train-00000-of-00001.tfrecord", "train-summary.json",
        "val-00000-of-00001.tfrecord", "val-summary.json"]

    err = cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "test",
              "--output-dir", tmp_path / "o2", error=DatasetError)
    assert "ImageSets/Main/test.txt not found" in str(err) and "train, val" in str(err)


def test_voc_split_file_listing_missing_image_names_the_line(tmp_path, cli, helpers):
    root = tmp_path / "VOC"
    helpers.make_image(root / "JPEGImages" / "a.jpg")
    helpers.write_voc(root / "Annotations" / "a.xml", "a.jpg", (64, 48), [("cat", (1, 1, 9, 9))])
    helpers.write_voc(root / "Annotations" / "b.xml", "b.jpg", (64, 48), [("cat", (1, 1, 9, 9))])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")
    args = ["dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "train"]
    err = cli(*args, "--output-dir", tmp_path / "o", error=DatasetError)
    assert "b.xml" in str(err) and "JPEGImages/b.jpg not found" in str(err) and "train.txt line 2" in str(err)
    assert not (tmp_path / "o").exists()
    cli(*args, "--output-dir", tmp_path / "o", "--skip-bad")
    s = helpers.summary(tmp_path / "o", "train")
    assert s["images"] == 1
    reasons = {d["file"]: d["reason"] for d in s["skipped"]}
    assert len(reasons) == 2
    assert any("train.txt line 3" in f and "c.xml not found" in r for f, r in reasons.items())


def test_flat_voc_layout_takes_every_xml_into_the_one_split(tmp_path, cli, helpers):
    root = tmp_path / "labelled"
    helpers.make_image(root / "images" / "x.png", fmt="PNG")
    helpers.make_image(root / "images" / "y.jpg")
    helpers.write_voc(root / "annotations" / "x.xml", "x.png", (64, 48), [("cat", (10, 10, 20, 30))])
    # labelImg sometimes writes the name without extension: the image is found by its stem.
    helpers.write_voc(root / "annotations" / "y.xml", "y", (64, 48), [("cat", (0, 0, 8, 8))])
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "all", "--output-dir", out)
    recs = helpers.records(out, "all")
    assert [(r["filename"], r["format"]) for r in recs] == [(b"x.png", b"png"), (b"y.jpg", b"jpeg")]
    err = cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "a", "--split", "b",
              "--output-dir", tmp_path / "o2", error=DatasetError)
    assert "flat VOC layout" in str(err)


def test_labelimg_layout_xml_beside_each_image_any_extension_case(tmp_path, cli, helpers):
    root = tmp_path / "train"
    helpers.make_image(root / "IMG_1.JPG")
    helpers.make_image(root / "IMG_2.jpg")
    helpers.make_image(root / "IMG_3.jpg")
    helpers.write_voc(root / "IMG_1.xml", "IMG_1.JPG", (64, 48), [("king", (10, 10, 20, 30))])
    # The XML says .JPG but the file on disk is .jpg (and the reverse): found by its stem either way.
    helpers.write_voc(root / "IMG_2.xml", "IMG_2.JPG", (64, 48), [("ace", (0, 0, 8, 8)), ("king", (5, 5, 30, 40))])
    helpers.write_voc(root / "IMG_3.xml", "IMG_3", (64, 48), [("ace", (1, 2, 9, 9))])
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "train", "--output-dir", out)
    recs = helpers.records(out, "train")
    assert [r["filename"] for r in recs] == [b"IMG_1.JPG", b"IMG_2.jpg", b"IMG_3.jpg"]
    assert [len(r["labels"]) for r in recs] == [1, 2, 1]
    assert helpers.classes(out) == ["ace", "king"]
    assert helpers.summary(out, "train")["skipped"] == []


def test_voc_data_dir_without_any_known_layout_names_the_layouts(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "photos" / "a.jpg")
    err = cli("dataset", "transform", "--type", "voc", "--data-dir", tmp_path / "photos", "--split", "train",
              "--output-dir", tmp_path / "out", error=DatasetError)
    assert "beside their images" in str(err) and "annotations/ + images/" in str(err)


def _coco_fixture(tmp_path, helpers, images_dir):
    for name in ("p.jpg", "q.jpg", "r.jpg"):
        helpers.make_image(images_dir / name, size=(100, 50))
    images = [{"id": 10, "file_name": "p.jpg", "width": 100, "height": 50},
              {"id": 20, "file_name": "q.jpg", "width": 100, "height": 50},
              {"id": 30, "file_name": "r.jpg", "width": 100, "height": 50}]
    anns = [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1},
            {"id": 3, "image_id": 20, "category_id": 7, "bbox": [50, 25, 50, 25], "iscrowd": 0}]
    cats = [{"id": 7, "name": "zebra"}, {"id": 3, "name": "ant"}]
    return images, anns, cats


def test_coco_with_annotations_and_images_dir(tmp_path, cli, helpers):
    images, anns, cats = _coco_fixture(tmp_path, helpers, tmp_path / "pics")
    ann = helpers.write_coco(tmp_path / "labels.json", images, anns, cats)
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "coco", "--annotations", ann, "--images-dir", tmp_path / "pics",
        "--split", "train", "--output-dir", out)
    assert helpers.classes(out) == ["ant", "zebra"]  # ids 7, 3 -> contiguous labels by sorted name
    recs = helpers.records(out, "train")
    assert [r["source_id"] for r in recs] == [b"10", b"20", b"30"]
    np.testing.assert_array_equal(recs[0]["labels"], [2, 1])
    np.testing.assert_array_equal(recs[0]["is_crowd"], [False, True])
    np.testing.assert_allclose(recs[0]["boxes"], [[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.5, 1.0]], atol=1e-6)
    np.testing.assert_allclose(recs[1]["boxes"], [[0.5, 0.5, 1.0, 1.0]], atol=1e-6)
    assert recs[2]["labels"].shape == (0,)  # r.jpg has no annotation: a negative
    s = helpers.summary(out, "train")
    assert (s["images"], s["negatives"], s["crowd_boxes"], s["boxes_per_class"]) == (3, 1, 1, {"ant": 1, "zebra": 2})


def test_coco_data_dir_layout(tmp_path, cli, helpers):
    images, anns, cats = _coco_fixture(tmp_path, helpers, tmp_path / "coco" / "val2017")
    helpers.write_coco(tmp_path / "coco" / "annotations" / "instances_val2017.json", images, anns, cats)
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "coco", "--data-dir", tmp_path / "coco", "--split", "val2017",
        "--output-dir", out)
    assert helpers.summary(out, "val2017")["images"] == 3
    err = cli("dataset", "transform", "--type", "coco", "--data-dir", tmp_path / "coco", "--split", "train2017",
              "--output-dir", tmp_path / "o2", error=DatasetError)
    assert "instances_train2017.json: not found" in str(err)


def test_luminoth_csv_columns_with_bom_and_crlf(tmp_path, cli, helpers):
    data = tmp_path / "data"
    helpers.make_image(data / "train" / "img_a.jpg", size=(200, 100))
    helpers.make_image(data / "train" / "img_b.png", size=(50, 50), fmt="PNG")
    # Luminoth's column order; image_id without extension; BOM and Windows line endings.
    helpers.write_csv(data / "train.csv", [("img_a", 20, 10, 120, 60, "car"), ("img_b.png", 0, 0, 25, 25, "bus"),
                                           ("img_a", 0, 0, 200, 100, "bus")],
                      header="image_id,xmin,ymin,xmax,ymax,label", newline="\r\n", bom=True)
    out = tmp_path / "out"
    cli("dataset", "transform", "--type", "csv", "--data-dir", data, "--split", "train", "--output-dir", out)
    assert helpers.classes(out) == ["bus", "car"]
    recs = helpers.records(out, "train")
    assert [r["filename"] for r in recs] == [b"img_a.jpg", b"img_b.png"]
    np.testing.assert_array_equal(recs[0]["labels"], [2, 1])
    np.testing.assert_array_equal(recs[0]["label_text"], [b"car", b"bus"])
    np.testing.assert_allclose(recs[0]["boxes"], [[0.1, 0.1, 0.6, 0.6], [0, 0, 1, 1]], atol=1e-6)
    assert (recs[1]["width"], recs[1]["height"], recs[1]["format"]) == (50, 50, b"png")


def test_csv_with_bom_crlf_matches_plain_csv(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg", size=(64, 48))
    rows = [("a.jpg", 64, 48, "cat", 1, 2, 30, 40)]
    plain = helpers.write_csv(tmp_path / "plain.csv", rows)
    windows = helpers.write_csv(tmp_path / "win.csv", rows, newline="\r\n", bom=True)
    for name, path in (("p", plain), ("w", windows)):
        cli("dataset", "transform", "--type", "csv", "--annotations", path, "--images-dir", tmp_path / "im",
            "--split", "s", "--output-dir", tmp_path / name)
    p, w = helpers.records(tmp_path / "p", "s"), helpers.records(tmp_path / "w", "s")
    assert helpers.classes(tmp_path / "w") == ["cat"]
    np.testing.assert_allclose(p[0]["boxes"], w[0]["boxes"])
    np.testing.assert_allclose(w[0]["boxes"], [[1 / 64, 2 / 48, 30 / 64, 40 / 48]], atol=1e-6)


def test_raccoon_fixture_is_the_packaged_copy_so_a_fresh_clone_runs_every_test(raccoon_dir):
    """No test depends on a dataset outside the repository (../shared): the package ships the photos."""
    import detkit

    packaged = os.path.join(os.path.dirname(os.path.abspath(detkit.__file__)), "data", "raccoon")
    assert os.path.realpath(os.path.join(raccoon_dir, "images")) == os.path.realpath(os.path.join(packaged, "images"))
    for name in ("data/train_labels.csv", "data/test_labels.csv", "coco/instances_train.json",
                 "coco/instances_test.json", "annotations/raccoon-1.xml", "images/raccoon-200.jpg"):
        assert os.path.isfile(os.path.join(raccoon_dir, name)), name
