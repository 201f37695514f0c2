"""`detkit dataset transform` on bad input not covered by tests/datasets: each case gets exit code != 0 and
one line naming the file and the fix, or a counted skip / a note in the summary where that is the documented
behaviour. (Corrupt, truncated, zero-byte, non-image, grayscale, RGBA, CMYK and 16-bit images, malformed XML,
JSON and CSV rows, wrong-length COCO bboxes, missing CSV columns, BOM + CRLF, empty annotations and split
files naming missing images are covered in tests/datasets.)
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from robust_helpers import png_header_only


def _transform(detkit, fmt, *args):
    return detkit("dataset", "transform", "--type", fmt, "--split", "s", *args)


def _csv(detkit, helpers, tmp_path, rows, *extra, header=None):
    kwargs = {"header": header} if header else {}
    ann = helpers.write_csv(tmp_path / "labels.csv", rows, **kwargs)
    return _transform(detkit, "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
                      "--output-dir", tmp_path / "out", *extra)


# ---------------------------------------------------------------- images
def test_decompression_bomb_is_skipped_as_too_large_not_corrupt(tmp_path, detkit, helpers):
    helpers.make_image(tmp_path / "im" / "good.jpg")
    png_header_only(tmp_path / "im" / "bomb.png", 40000, 40000)  # 1.6 G pixels: 4.8 GB decoded
    res = _csv(detkit, helpers, tmp_path, [("good.jpg", 64, 48, "cat", 1, 1, 9, 9),
                                           ("bomb.png", 40000, 40000, "cat", 1, 1, 9, 9)])
    assert res.code == 0, res.err
    s = helpers.summary(tmp_path / "out", "s")
    assert s["images"] == 1
    assert [d["file"].rsplit("/", 1)[-1] for d in s["skipped"]] == ["bomb.png"]
    assert s["skipped"][0]["reason"] == (
        "image too large (1600000000 pixels, over the 178956970 pixel limit): resize it before converting")


def test_huge_10000x10000_photo_is_accepted_at_its_size(tmp_path, detkit, helpers):
    (tmp_path / "im").mkdir()
    # Grayscale keeps the test's memory at 100 MB; a flat JPEG of it is a few hundred KB.
    Image.new("L", (10000, 10000), 128).save(tmp_path / "im" / "huge.jpg", quality=50)
    res = _csv(detkit, helpers, tmp_path, [("huge.jpg", 10000, 10000, "cat", 100, 200, 5100, 8200)])
    assert res.code == 0, res.err
    rec = helpers.records(tmp_path / "out", "s")[0]
    assert (int(rec["width"]), int(rec["height"])) == (10000, 10000)
    np.testing.assert_allclose(rec["boxes"], [[0.01, 0.02, 0.51, 0.82]], atol=1e-6)
    assert rec["image"] == (tmp_path / "im" / "huge.jpg").read_bytes()


def test_exif_rotated_photo_keeps_stored_pixels_and_notes_the_swapped_size(tmp_path, detkit, helpers):
    path = helpers.make_image(tmp_path / "im" / "rot.jpg", size=(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees: 48x64 upright
    with Image.open(path) as im:
        im.save(path, exif=exif.tobytes(), quality=95)
    res = _csv(detkit, helpers, tmp_path, [("rot.jpg", 48, 64, "cat", 4, 8, 24, 40)])
    assert res.code == 0, res.err
    rec = helpers.records(tmp_path / "out", "s")[0]
    assert (int(rec["width"]), int(rec["height"])) == (64, 48)  # the stored pixels, which TF decodes
    s = helpers.summary(tmp_path / "out", "s")
    assert s["size_mismatches"] == [{"file": str(tmp_path / "labels.csv") + " line 2", "annotated": [48, 64],
                                     "stored": [64, 48]}]


# ---------------------------------------------------------------- VOC XML
def _voc(detkit, tmp_path, *extra):
    return _transform(detkit, "voc", "--data-dir", tmp_path / "voc", "--output-dir", tmp_path / "out", *extra)


def test_xml_without_size_takes_the_size_from_the_image(tmp_path, detkit, helpers):
    root = tmp_path / "voc"
    helpers.make_image(root / "images" / "a.jpg", size=(80, 40))
    (root / "annotations").mkdir()
    (root / "annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>cat</name>"
        "<bndbox><xmin>8</xmin><ymin>4</ymin><xmax>40</xmax><ymax>20</ymax></bndbox></object></annotation>")
    res = _voc(detkit, tmp_path)
    assert res.code == 0, res.err
    rec = helpers.records(tmp_path / "out", "s")[0]
    assert (int(rec["width"]), int(rec["height"])) == (80, 40)
    np.testing.assert_allclose(rec["boxes"], [[0.1, 0.1, 0.5, 0.5]], atol=1e-6)


@pytest.mark.parametrize("obj, message", [
    ("<object><name>cat</name></object>", "<object> #2 (cat): missing <bndbox>"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object>",
     "<object> #2 (cat): missing <bndbox><ymax>"),
    ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>",
     "<object> #2: missing or empty <name>"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>nan</xmax><ymax>9</ymax></bndbox></object>",
     "<object> #2 (cat) <bndbox><xmax>: expected a finite number, got 'nan'"),
])
def test_xml_object_without_box_or_name_is_named_then_skippable(tmp_path, detkit, helpers, obj, message):
    root = tmp_path / "voc"
    helpers.make_image(root / "images" / "a.jpg")
    helpers.make_image(root / "images" / "b.jpg")
    helpers.write_voc(root / "annotations" / "a.xml", "a.jpg", (64, 48), [("cat", (1, 1, 9, 9))])
    good = ("<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
            "</bndbox></object>")
    (root / "annotations" / "b.xml").write_text(f"<annotation><filename>b.jpg</filename>{good}{obj}</annotation>")
    line = _voc(detkit, tmp_path).error_line()
    assert line == f"{root / 'annotations' / 'b.xml'}: {message} (use --skip-bad to skip it)"
    assert not (tmp_path / "out").exists()
    res = _voc(detkit, tmp_path, "--skip-bad")
    assert res.code == 0, res.err
    s = helpers.summary(tmp_path / "out", "s")
    assert s["images"] == 1 and s["skipped"] == [{"file": str(root / "annotations" / "b.xml"), "reason": message}]


def test_xml_negative_and_float_coordinates(tmp_path, detkit, helpers):
    root = tmp_path / "voc"
    helpers.make_image(root / "images" / "a.jpg", size=(100, 50))
    helpers.write_voc(root / "annotations" / "a.xml", "a.jpg", (100, 50),
                      [("cat", (-5, -2.5, 50, 25)), ("cat", (10.5, 12.25, 30.75, 37.5))])
    res = _voc(detkit, tmp_path)
    assert res.code == 0, res.err
    rec = helpers.records(tmp_path / "out", "s")[0]
    # (-5, -2.5) is clipped to the image; fractional pixels are kept, not rounded.
    np.testing.assert_allclose(rec["boxes"], [[0.0, 0.0, 0.5, 0.5], [0.105, 0.245, 0.3075, 0.75]], atol=1e-6)
    assert helpers.summary(tmp_path / "out", "s")["clipped_boxes"] == 1


def test_class_names_with_spaces_and_unicode_round_trip(tmp_path, detkit, helpers):
    root = tmp_path / "voc"
    names = ["red panda", "chat noir é", "熊猫", "  padded  "]
    for i, name in enumerate(names):
        helpers.make_image(root / "images" / f"{i}.jpg")
        helpers.write_voc(root / "annotations" / f"{i}.xml", f"{i}.jpg", (64, 48), [(name, (1, 1, 9, 9))])
    res = _voc(detkit, tmp_path)
    assert res.code == 0, res.err
    classes = helpers.classes(tmp_path / "out")
    assert sorted(classes) == sorted(["red panda", "chat noir é", "熊猫", "padded"])  # outer blanks dropped
    recs = {r["filename"].decode(): r for r in helpers.records(tmp_path / "out", "s")}
    for i, name in enumerate(names):
        assert classes[int(recs[f"{i}.jpg"]["labels"][0]) - 1] == name.strip()
    raw = json.loads((tmp_path / "out" / "classes.json").read_bytes().decode("utf-8"))
    assert raw == classes


# ---------------------------------------------------------------- COCO JSON
COCO_IMAGES = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
COCO_GOOD = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]}]
CATS = [{"id": 1, "name": "cat"}]


def _coco(detkit, helpers, tmp_path, data, *extra):
    for name in ("a.jpg", "b.jpg"):
        helpers.make_image(tmp_path / "im" / name)
    ann = tmp_path / "l.json"
    ann.write_text(json.dumps(data), encoding="utf-8")
    return _transform(detkit, "coco", "--annotations", ann, "--images-dir", tmp_path / "im",
                      "--output-dir", tmp_path / "out", *extra)


@pytest.mark.parametrize("case, data, message, skipped", [
    ("unknown image id", {"images": COCO_IMAGES, "categories": CATS, "annotations": COCO_GOOD + [
        {"id": 2, "image_id": 99, "category_id": 1, "bbox": [1, 1, 8, 8]}]},
     "annotations[1]: image_id 99 is not in 'images'", 2),
    ("unknown category", {"images": COCO_IMAGES, "categories": CATS, "annotations": COCO_GOOD + [
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 1, 8, 8]}]},
     "annotations[1]: category_id 7 is not in 'categories' (in image id 2)", 1),
    ("duplicate image id", {"images": COCO_IMAGES + [{"id": 2, "file_name": "a.jpg"}], "categories": CATS,
                            "annotations": COCO_GOOD},
     "images[2]: duplicate image id 2 (also images[1])", 1),
    ("bbox not a list", {"images": COCO_IMAGES, "categories": CATS, "annotations": COCO_GOOD + [
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": "1,1,8,8"}]},
     "annotations[1]: bbox must be [x, y, width, height], got '1,1,8,8' (in image id 2)", 1),
    ("image without file_name", {"images": COCO_IMAGES + [{"id": 3}], "categories": CATS, "annotations": COCO_GOOD},
     "images[2]: missing or empty 'file_name'", 2),
])
def test_coco_bad_element_is_named_then_skippable(tmp_path, detkit, helpers, case, data, message, skipped):
    ann = tmp_path / "l.json"
    line = _coco(detkit, helpers, tmp_path, data).error_line()
    assert line == f"{ann}: {message} (use --skip-bad to skip it)"
    res = _coco(detkit, helpers, tmp_path, data, "--skip-bad")
    assert res.code == 0, res.err
    s = helpers.summary(tmp_path / "out", "s")
    assert s["images"] == skipped and s["skipped"][0] == {"file": f"{ann}: {message.split(': ', 1)[0]}",
                                                          "reason": message.split(": ", 1)[1]}


@pytest.mark.parametrize("case, data, message", [
    ("no categories", {"images": COCO_IMAGES, "annotations": COCO_GOOD}, "no 'categories' list"),
    ("categories not a list", {"images": COCO_IMAGES, "annotations": COCO_GOOD, "categories": {"1": "cat"}},
     "'categories' must be a list"),
    ("duplicate category id", {"images": COCO_IMAGES, "annotations": COCO_GOOD,
                               "categories": CATS + [{"id": 1, "name": "dog"}]},
     "categories[1]: duplicate category id 1"),
    ("category without name", {"images": COCO_IMAGES, "annotations": COCO_GOOD, "categories": [{"id": 1}]},
     "categories[0]: expected an object with 'id' and a non-empty 'name'"),
    ("no images", {"annotations": COCO_GOOD, "categories": CATS}, "no 'images' list"),
    ("top level list", [COCO_IMAGES], "expected a JSON object with 'images', 'annotations' and 'categories'"),
])
def test_coco_broken_file_structure_is_one_line(tmp_path, detkit, helpers, case, data, message):
    assert _coco(detkit, helpers, tmp_path, data).error_line() == f"{tmp_path / 'l.json'}: {message}"
    assert not (tmp_path / "out").exists()


def test_coco_without_images_is_an_empty_dataset(tmp_path, detkit, helpers):
    data = {"images": [], "annotations": [], "categories": CATS}
    assert _coco(detkit, helpers, tmp_path, data).error_line() == "split 's': the annotations list no images"


# ---------------------------------------------------------------- CSV
def test_csv_extra_and_reordered_columns_are_ignored(tmp_path, detkit, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg", size=(100, 50))
    res = _csv(detkit, helpers, tmp_path, [("note", 10, 5, 50, 25, "cat", "a.jpg", "x")],
               header="comment,xmin,ymin,xmax,ymax,class,filename,source")
    assert res.code == 0, res.err
    rec = helpers.records(tmp_path / "out", "s")[0]
    np.testing.assert_allclose(rec["boxes"], [[0.1, 0.1, 0.5, 0.5]], atol=1e-6)
    assert helpers.classes(tmp_path / "out") == ["cat"]


def test_csv_quoted_class_with_comma_bom_and_crlf(tmp_path, detkit, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg", size=(100, 50))
    ann = helpers.write_csv(tmp_path / "labels.csv", [("a.jpg", 100, 50, '"cat, big"', 10, 5, 50, 25)],
                            newline="\r\n", bom=True)
    res = _transform(detkit, "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
                     "--output-dir", tmp_path / "out")
    assert res.code == 0, res.err
    assert helpers.classes(tmp_path / "out") == ["cat, big"]


def test_csv_header_only_is_an_empty_dataset(tmp_path, detkit, helpers):
    (tmp_path / "im").mkdir()
    assert _csv(detkit, helpers, tmp_path, []).error_line() == "split 's': the annotations list no images"


def test_csv_not_utf8_names_the_line(tmp_path, detkit, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    ann = tmp_path / "labels.csv"
    ann.write_bytes(b"filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,ch\xe9vre,1,1,9,9\n")
    line = _transform(detkit, "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
                      "--output-dir", tmp_path / "out").error_line()
    assert line == f"{ann} line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_empty_voc_annotations_directory(tmp_path, detkit):
    (tmp_path / "voc" / "annotations").mkdir(parents=True)
    (tmp_path / "voc" / "images").mkdir()
    assert _voc(detkit, tmp_path).error_line() == f"annotations directory {tmp_path / 'voc' / 'annotations'}: no .xml files"


# ---------------------------------------------------------------- where the output goes
def test_output_dir_under_a_regular_file(tmp_path, detkit, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    (tmp_path / "blocker").write_text("a file")
    ann = helpers.write_csv(tmp_path / "labels.csv", [("a.jpg", 64, 48, "cat", 1, 1, 9, 9)])
    out = tmp_path / "blocker" / "out"
    line = _transform(detkit, "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
                      "--output-dir", out).error_line()
    assert line == (f"output directory {out}: cannot write ({tmp_path / 'blocker'} is a file, not a directory); "
                    "choose a writable --output-dir")


def test_disk_full_while_writing_shards_keeps_the_old_output(tmp_path, detkit, helpers, monkeypatch):
    import errno
    import os

    from detkit.datasets import tfrecord

    rows = [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(5)]
    for row in rows:
        helpers.make_image(tmp_path / "im" / row[0])
    assert _csv(detkit, helpers, tmp_path, rows[:2]).code == 0
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = tfrecord.ShardWriter.write

    def fills_up(self, record):
        if self.count == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, record)

    monkeypatch.setattr(tfrecord.ShardWriter, "write", fills_up)
    line = _csv(detkit, helpers, tmp_path, rows, "--overwrite").error_line()
    assert line == (f"output directory {out}: cannot write (No space left on device); free some space or "
                    "choose another --output-dir")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old output whole, staging removed
