"""`detkit dataset export`: COCO, VOC and YOLO written so that converting them again gives the same records."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from detkit.datasets.compare import record_differences
from detkit.datasets.orientation import box_to_stored, box_to_upright
from detkit.errors import DatasetError


@pytest.fixture(scope="module")
def raccoon_records(raccoon_dir, tmp_path_factory):
    """The packaged raccoon train and test splits as one converted folder."""
    from click.testing import CliRunner

    from detkit.cli.main import cli as root

    out = tmp_path_factory.mktemp("export") / "raccoon"
    for i, split in enumerate(("train", "test")):
        result = CliRunner().invoke(root, [
            "dataset", "transform", "--type", "csv", "--annotations", f"{raccoon_dir}/data/{split}_labels.csv",
            "--images-dir", f"{raccoon_dir}/images", "--split", split, "--output-dir", str(out), "--no-check",
            *(["--overwrite"] if i else [])], standalone_mode=False)
        assert result.exception is None, result.output
    return out


def _back(cli, fmt, exported, splits, out):
    """Convert an export again."""
    args = [a for s in splits for a in ("--split", s)]
    cli("dataset", "transform", "--type", fmt, "--data-dir", exported, *args, "--output-dir", out, "--no-check")
    return out


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_raccoon_round_trip_gives_identical_records(raccoon_records, tmp_path, cli, fmt):
    exported = tmp_path / f"ex_{fmt}"
    cli("dataset", "export", raccoon_records, "--to", fmt, "--output-dir", exported)
    back = _back(cli, fmt, exported, ["train", "test"], tmp_path / "back")
    ignore = ["source_id"] if fmt == "coco" else []  # COCO numbers its images
    for split in ("train", "test"):
        assert record_differences(str(raccoon_records), str(back), split, ignore=ignore) == []
    marker = json.loads((exported / ".detkit-export.json").read_text())
    assert marker["splits"]["train"]["images"] == 160 and marker["format"] == fmt


def test_synthetic_round_trip_keeps_fractions_flags_negatives_and_exif_orientation(tmp_path, cli, helpers):
    images = tmp_path / "im"
    helpers.make_image(images / "a.jpg", size=(97, 61))
    helpers.make_image(images / "b.png", size=(33, 47), fmt="PNG")
    helpers.make_image(images / "n.jpg", size=(20, 20))
    turned = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (90, 40), "gray").save(turned, "JPEG", exif=exif)
    (images / "t.jpg").write_bytes(turned.getvalue())
    rows = [("a.jpg", 97, 61, "cat", 1.25, 2.5, 30.75, 40.125), ("a.jpg", 97, 61, "dog", 0, 0, 97, 61),
            ("b.png", 33, 47, "dog", 3, 4, 10.333, 20.667), ("n.jpg", 20, 20, "", "", "", "", ""),
            ("t.jpg", 90, 40, "cat", 10, 5, 50, 35)]
    csv = helpers.write_csv(tmp_path / "labels.csv", rows)
    src = tmp_path / "src"
    cli("dataset", "transform", "--type", "csv", "--annotations", csv, "--images-dir", images, "--split", "s",
        "--output-dir", src, "--no-check")
    for fmt in ("voc", "coco", "yolo"):
        exported = tmp_path / f"ex_{fmt}"
        cli("dataset", "export", src, "--to", fmt, "--output-dir", exported)
        back = _back(cli, fmt, exported, ["s"], tmp_path / f"back_{fmt}")
        assert record_differences(str(src), str(back), "s", ignore=["source_id"] if fmt == "coco" else []) == [], fmt
    # Straight from the reader, the same files as from the records.
    cli("dataset", "export", "--type", "csv", "--annotations", csv, "--images-dir", images, "--split", "s",
        "--to", "voc", "--output-dir", tmp_path / "direct")
    for name in ("Annotations/a.xml", "Annotations/t.xml", "ImageSets/Main/s.txt", "JPEGImages/t.jpg"):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "ex_voc" / name).read_bytes(), name
    # VOC keeps pixel values as written; YOLO's fractions are of the upright photo (90x40 stored, 40x90 upright).
    assert "<xmin>1.25</xmin>" in (tmp_path / "ex_voc" / "Annotations" / "a.xml").read_text()
    assert (tmp_path / "ex_yolo" / "labels" / "s" / "n.txt").read_text() == ""
    cls, cx, cy, w, h = (tmp_path / "ex_yolo" / "labels" / "s" / "t.txt").read_text().split()
    upright = box_to_upright((10, 5, 50, 35), 6, 90, 40)
    assert upright == (5, 10, 35, 50)
    assert [float(v) for v in (cx, cy, w, h)] == pytest.approx([20 / 40, 30 / 90, 30 / 40, 40 / 90])
    coco = json.loads((tmp_path / "ex_coco" / "annotations" / "instances_s.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog",
                                                                                   "supercategory": ""}]
    assert coco["annotations"][0]["bbox"] == [1.25, 2.5, 29.5, 37.625]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_boxes_follow_pillows_exif_transpose(orientation):
    from PIL import ImageOps

    stored = Image.new("L", (12, 7), 0)
    stored.paste(255, (2, 1, 5, 3))  # a 3x2 white box at x 2-5, y 1-3 of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert box_to_upright((2, 1, 5, 3), orientation, 12, 7) == upright.getbbox()
    assert box_to_stored(upright.getbbox(), orientation, 12, 7) == (2, 1, 5, 3)


def test_export_refuses_to_replace_what_it_did_not_make(raccoon_records, tmp_path, cli):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    err = cli("dataset", "export", raccoon_records, "--to", "yolo", "--output-dir", tmp_path / "mine",
              "--split", "test", error=DatasetError)
    assert "is not empty: use --overwrite" in str(err)
    err = cli("dataset", "export", raccoon_records, "--to", "yolo", "--output-dir", tmp_path / "mine",
              "--split", "test", "--overwrite", error=DatasetError)
    assert "was not made by `detkit dataset export`" in str(err)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    cli("dataset", "export", raccoon_records, "--to", "yolo", "--output-dir", tmp_path / "ex", "--split", "test")
    cli("dataset", "export", raccoon_records, "--to", "coco", "--output-dir", tmp_path / "ex", "--split", "test",
        "--overwrite")
    assert sorted(p.name for p in (tmp_path / "ex").iterdir()) == [".detkit-export.json", "annotations", "test"]
