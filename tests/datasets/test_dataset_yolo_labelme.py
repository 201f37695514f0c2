"""YOLO and LabelMe: the same records as the VOC form of the same boxes; their layouts, notes and bad input."""
from __future__ import annotations

import base64
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detkit.datasets.compare import record_differences
from detkit.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
# CI clones the project beside shared/; DETKIT_SHARED points elsewhere (a worktree).
SHARED_CARDS = Path(os.environ.get("DETKIT_SHARED", REPO.parent / "shared")) / "datasets" / "cards"


def _assert_same_records(voc_out: Path, other_out: Path, split: str, helpers, atol: float = 0.0) -> None:
    """Same images, classes, labels and boxes (exactly, or within `atol` of the normalised coordinates)."""
    if atol == 0.0:
        assert record_differences(str(voc_out), str(other_out), split) == []
        return
    assert helpers.classes(voc_out) == helpers.classes(other_out)
    a = {r["filename"]: r for r in helpers.records(voc_out, split)}
    b = {r["filename"]: r for r in helpers.records(other_out, split)}
    assert sorted(a) == sorted(b)
    for name, rec in a.items():
        assert rec["image"] == b[name]["image"], name
        np.testing.assert_array_equal(rec["labels"], b[name]["labels"], err_msg=name.decode())
        np.testing.assert_allclose(rec["boxes"], b[name]["boxes"], atol=atol, err_msg=name.decode())


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _convert(cli, fmt, out, *args):
    cli("dataset", "transform", "--type", fmt, "--output-dir", out, *args)
    return out


def _formats_agree(xml_by_split: dict, images_dir: Path, tmp_path: Path, cli, helpers) -> None:
    """VOC files of each split, converted as VOC, as YOLO (both variants) and as LabelMe: the same records."""
    names = sorted({c for paths in xml_by_split.values() for p in paths for c, _ in helpers_voc(p)})
    splits = list(xml_by_split)
    voc_args, ultra, robo, labelme = [], tmp_path / "ultra", tmp_path / "robo", tmp_path / "labelme"
    for split, xml_paths in xml_by_split.items():
        ann = tmp_path / "voc" / split / "annotations"
        ann.mkdir(parents=True)
        for p in xml_paths:
            (ann / p.name).symlink_to(p)
        (tmp_path / "voc" / split / "images").symlink_to(images_dir)
        _convert(cli, "voc", tmp_path / f"o_voc_{split}", "--data-dir", tmp_path / "voc" / split, "--split", split)
        helpers.voc_to_yolo(xml_paths, images_dir, ultra, split, names)
        helpers.voc_to_yolo(xml_paths, images_dir, robo, split, names, roboflow=True)
        helpers.voc_to_labelme(xml_paths, images_dir, labelme / split)
    # Ultralytics: `path` and names as a mapping; Roboflow: ../SPLIT/images relative to data.yaml, nc, a list.
    _yaml(ultra / "data.yaml", "path: .\n" + "".join(f"{s}: images/{s}\n" for s in splits)
          + "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    _yaml(robo / "data.yaml", "".join(f"{s}: ../{s}/images\n" for s in splits) + f"nc: {len(names)}\nnames: {names}\n")
    split_args = [a for s in splits for a in ("--split", s)]
    _convert(cli, "yolo", tmp_path / "o_ultra", "--data-dir", ultra, *split_args)
    _convert(cli, "yolo", tmp_path / "o_robo", "--data-dir", robo / "data.yaml", *split_args)
    _convert(cli, "labelme", tmp_path / "o_labelme", "--data-dir", labelme, *split_args)
    for split in splits:
        voc_out = tmp_path / f"o_voc_{split}"
        _assert_same_records(voc_out, tmp_path / "o_labelme", split, helpers)
        # 6 decimals of a fraction: within 1e-6 of the image size, as the YOLO file itself.
        _assert_same_records(voc_out, tmp_path / "o_ultra", split, helpers, atol=2e-6)
        _assert_same_records(voc_out, tmp_path / "o_robo", split, helpers, atol=2e-6)
        assert helpers.summary(tmp_path / "o_ultra", split)["skipped"] == []


def helpers_voc(xml_path: Path):
    """The (class, box) pairs of a VOC file."""
    import xml.etree.ElementTree as ET

    return [(o.findtext("name").strip(), None) for o in ET.parse(xml_path).getroot().findall("object")]


def test_raccoon_as_yolo_and_labelme_gives_the_voc_records(raccoon, tmp_path, cli, helpers):
    with open(raccoon / "data" / "test_labels.csv", newline="") as fh:
        test_files = sorted({row["filename"] for row in csv.DictReader(fh)})
    xmls = [raccoon / "annotations" / (os.path.splitext(n)[0] + ".xml") for n in test_files]
    _formats_agree({"train": xmls[:25], "val": xmls[25:]}, raccoon / "images", tmp_path, cli, helpers)


@pytest.mark.skipif(not SHARED_CARDS.is_dir(), reason=f"{SHARED_CARDS} is not beside the project (CI has it)")
def test_cards_as_yolo_and_labelme_gives_the_voc_records(tmp_path, cli, helpers):
    by_split = {split: sorted((SHARED_CARDS / split).glob("*.xml")) for split in ("train", "test")}
    images = tmp_path / "cards_images"
    images.mkdir()
    for split in by_split:
        for p in (SHARED_CARDS / split).iterdir():
            if p.suffix.lower() in (".jpg", ".png"):
                (images / p.name).symlink_to(p)
    _formats_agree(by_split, images, tmp_path, cli, helpers)


def test_yolo_txt_lists_segments_negatives_and_exif_rotated_photos(tmp_path, cli, helpers):
    root = tmp_path / "yolo"
    helpers.make_image(root / "images" / "a.jpg", size=(100, 50))
    helpers.make_image(root / "images" / "b.png", size=(40, 40), fmt="PNG")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.3 0.1 0.3 0.3\n")  # a box, a segment
    # b.png has no label file: a negative. c.jpg is stored 100x50 but shown upright (EXIF 6) as 50x100.
    im = Image.new("RGB", (100, 50), "white")
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(root / "images" / "c.jpg", exif=exif)
    (root / "labels" / "c.txt").write_text("0 0.5 0.25 0.4 0.1\n")  # upright: x 15-35 of 50, y 20-30 of 100
    (root / "list.txt").write_text("./images/a.jpg\nimages/b.png\n./images/c.jpg\n")
    _yaml(root / "data.yaml", "train: list.txt\nnames: [cat, dog]\n")
    out = _convert(cli, "yolo", tmp_path / "out", "--data-dir", root, "--split", "train")
    recs = {r["filename"].decode(): r for r in helpers.records(out, "train")}
    assert sorted(recs) == ["images/a.jpg", "images/b.png", "images/c.jpg"]  # relative to the root (yaml's folder)
    np.testing.assert_array_equal(recs["images/a.jpg"]["label_text"], [b"dog", b"cat"])
    np.testing.assert_allclose(recs["images/a.jpg"]["boxes"], [[0.4, 0.3, 0.6, 0.7], [0.1, 0.1, 0.3, 0.3]], atol=1e-6)
    assert recs["images/b.png"]["boxes"].shape == (0, 4)
    # Upright box x 15-35, y 20-30 -> stored (EXIF 6 turns the stored pixels clockwise): x 20-30, y 15-35 of 50.
    np.testing.assert_allclose(recs["images/c.jpg"]["boxes"], [[20 / 100, 15 / 50, 30 / 100, 35 / 50]], atol=1e-6)
    notes = helpers.summary(out, "train")["reader_notes"]
    assert notes == {"segment as its bounding box": 1, "no label file (a negative)": 1,
                     "boxes moved from the upright photo to the stored pixels (EXIF orientation 6)": 1}


def test_yolo_bad_input_names_file_and_line_and_skip_bad_counts(tmp_path, cli, helpers):
    root = tmp_path / "yolo"
    for name in ("a", "b", "c"):
        helpers.make_image(root / "images" / "train" / f"{name}.jpg")
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.1 0.1\n")
    (labels / "c.txt").write_text("0 0.5 0.5 0.2\n")
    _yaml(root / "data.yaml", "train: images/train\nnames: {0: cat, 1: dog}\n")
    args = ["dataset", "transform", "--type", "yolo", "--data-dir", root, "--split", "train"]
    err = cli(*args, "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err).startswith(f"{labels / 'b.txt'} line 2: class 3 is not an index of the 2 names (0 to 1)")
    assert not (tmp_path / "o").exists()
    cli(*args, "--output-dir", tmp_path / "o", "--skip-bad")
    s = helpers.summary(tmp_path / "o", "train")
    assert s["images"] == 1
    assert {d["file"]: d["reason"].split(" (")[0] for d in s["skipped"]} == {
        f"{labels / 'b.txt'} line 2": "class 3 is not an index of the 2 names",
        f"{labels / 'c.txt'} line 1": "expected 'class x_center y_center width height'"}
    _yaml(root / "data.yaml", "train: images/train\nnc: 3\nnames: [cat, dog]\n")
    assert "key 'nc' is 3 but 'names' lists 2" in str(cli(*args, "--output-dir", tmp_path / "o2", error=DatasetError))
    _yaml(root / "data.yaml", "train: images/train\nnames: [cat, dog\n")
    assert "data.yaml line 3: invalid YAML" in str(cli(*args, "--output-dir", tmp_path / "o2", error=DatasetError))
    _yaml(root / "data.yaml", "train: images/train\nnames: [cat, dog]\n")
    err = cli("dataset", "transform", "--type", "yolo", "--data-dir", root, "--split", "val",
              "--output-dir", tmp_path / "o2", error=DatasetError)
    assert "no 'val' key (splits listed: train)" in str(err)


def test_labelme_polygons_other_shapes_embedded_images_and_bad_files(tmp_path, cli, helpers):
    root = tmp_path / "lm" / "train"
    helpers.make_image(tmp_path / "lm" / "photos" / "a.jpg", size=(80, 60))
    shapes = [{"label": "cat", "points": [[30, 40], [10, 20]], "shape_type": "rectangle"},
              {"label": "dog", "points": [[5, 5], [25, 8], [15, 30]], "shape_type": "polygon"},
              {"label": "dog", "points": [[40, 40], [45, 45]], "shape_type": "circle"}]
    root.mkdir(parents=True)
    (root / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "..\\photos\\a.jpg", "imageData": None,
                                             "imageWidth": 80, "imageHeight": 60}))
    embedded = helpers.make_image(tmp_path / "b.png", size=(20, 10), fmt="PNG").read_bytes()
    (root / "b.json").write_text(json.dumps({"shapes": [{"label": "cat", "points": [[1, 1], [5, 5]],
                                                        "shape_type": "rectangle"}],
                                             "imagePath": "gone/b.png", "imageData": base64.b64encode(embedded).decode(),
                                             "imageWidth": 20, "imageHeight": 10}))
    (root / "c.json").write_text('{"shapes": [\n  {"label": "cat", "points": [[1, 1] [2, 2]]}\n]}')
    (root / "d.json").write_text(json.dumps({"shapes": [{"label": "", "points": [[1, 1], [2, 2]],
                                                        "shape_type": "rectangle"}], "imagePath": "x.jpg"}))
    args = ["dataset", "transform", "--type", "labelme", "--data-dir", tmp_path / "lm", "--split", "train"]
    err = cli(*args, "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err).startswith(f"{root / 'c.json'} line 2, column ") and "invalid JSON" in str(err)
    cli(*args, "--output-dir", tmp_path / "o", "--skip-bad")
    s = helpers.summary(tmp_path / "o", "train")
    assert (s["images"], s["boxes"]) == (2, 3)
    assert s["reader_notes"] == {"circle shape skipped": 1, "polygon as its bounding box": 1}
    assert {os.path.basename(d["file"].split(" ")[0]): d["reason"] for d in s["skipped"]} == {
        "c.json": "invalid JSON (Expecting ',' delimiter)", "d.json": "shapes[0]: missing or empty 'label'"}
    recs = {r["filename"].decode(): r for r in helpers.records(tmp_path / "o", "train")}
    assert sorted(recs) == ["a.jpg", "b.png"]
    np.testing.assert_allclose(recs["a.jpg"]["boxes"], [[10 / 80, 20 / 60, 30 / 80, 40 / 60],
                                                        [5 / 80, 5 / 60, 25 / 80, 30 / 60]], atol=1e-6)
    assert recs["b.png"]["image"] == embedded  # imageData, the file named being gone


def test_labelme_flat_folder_is_one_split(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "lm" / "a.jpg")
    (tmp_path / "lm" / "a.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg"}))
    err = cli("dataset", "transform", "--type", "labelme", "--data-dir", tmp_path / "lm", "--split", "a", "--split",
              "b", "--output-dir", tmp_path / "o", error=DatasetError)
    assert "flat LabelMe layout" in str(err)
    cli("dataset", "transform", "--type", "labelme", "--data-dir", tmp_path / "lm", "--split", "all",
        "--output-dir", tmp_path / "o")
    assert helpers.summary(tmp_path / "o", "all")["negatives"] == 1
