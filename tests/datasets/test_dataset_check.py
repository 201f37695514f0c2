"""`detkit dataset check`: every planted fault found where it was planted, --fix output that trains, and the
check stopping `dataset transform` and `train --dataset-dir` on what would break training."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from detkit.config.tiny import tiny_config_yaml

CLEAN = [f"raccoon-{n}.jpg" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13)]  # no two of them the same photo


def _boxes(raccoon: Path) -> dict[str, tuple[int, int, list]]:
    """(width, height, [(class, box)]) of each packaged raccoon photo, from its CSV labels."""
    import csv

    out: dict = {}
    for split in ("train", "test"):
        with open(raccoon / "data" / f"{split}_labels.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                w, h, objs = out.setdefault(row["filename"], (int(row["width"]), int(row["height"]), []))
                objs.append((row["class"], tuple(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


@pytest.fixture
def faulty(raccoon, tmp_path, helpers) -> dict:
    """A VOCdevkit of 12 clean raccoon photos (train 8, test 4) with one fault of each kind planted."""
    root = tmp_path / "VOC"
    boxes = _boxes(raccoon)
    train, test = [], []
    planted: dict[str, str] = {}  # kind -> the file the finding must name

    def add(split: list, name: str, objects: list, size=None, image: bytes | None = None) -> Path:
        stem = os.path.splitext(name)[0]
        data = image if image is not None else (raccoon / "images" / name).read_bytes()
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "JPEGImages" / name).write_bytes(data)
        w, h, _ = boxes.get(name, (0, 0, []))
        helpers.write_voc(root / "Annotations" / f"{stem}.xml", name, size or (w, h), objects)
        split.append(stem)
        return root / "Annotations" / f"{stem}.xml"

    for name in CLEAN[:8]:
        w, h, objs = boxes[name]
        objs = list(objs)
        if name == "raccoon-1.jpg":  # box_outside: 30 px past the right edge
            objs.append(("raccoon", (w - 50, 10, w + 30, 60)))
            planted["box_outside"] = "raccoon-1.xml"
        if name == "raccoon-2.jpg":  # box_degenerate: no width
            objs.append(("raccoon", (40, 10, 40, 60)))
            planted["box_degenerate"] = "raccoon-2.xml"
        if name == "raccoon-3.jpg":  # duplicate_box: the same box twice
            objs.append(objs[0])
            planted["duplicate_box"] = "raccoon-3.xml"
        if name == "raccoon-4.jpg":  # rare_class: one skunk, in train only
            objs.append(("skunk", (1, 1, 30, 30)))
            planted["rare_class"] = "raccoon-4.xml"
        add(train, name, objs)
    w, h, objs = boxes["raccoon-5.jpg"]
    add(train, "copy-of-5.jpg", objs, (w, h), (raccoon / "images" / "raccoon-5.jpg").read_bytes())
    planted["duplicate_image"] = "copy-of-5.jpg"
    # cross_split_duplicate: raccoon-6 resized and re-encoded, in test.
    w, h, objs = boxes["raccoon-6.jpg"]
    small = io.BytesIO()
    Image.open(raccoon / "images" / "raccoon-6.jpg").resize((w // 2, h // 2)).save(small, "JPEG", quality=80)
    add(test, "small-6.jpg", [(c, tuple(v // 2 for v in b)) for c, b in objs], (w // 2, h // 2), small.getvalue())
    planted["cross_split_duplicate"] = "small-6.jpg"
    # exif_mismatch: raccoon-9's pixels stored turned (EXIF 6 turns them back upright), boxes drawn upright.
    w, h, objs = boxes["raccoon-9.jpg"]
    turned = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(raccoon / "images" / "raccoon-9.jpg").transpose(Image.Transpose.ROTATE_90).save(turned, "JPEG",
                                                                                                exif=exif)
    add(train, "turned-9.jpg", objs + [("raccoon", (w - 60, 5, w - 5, 50))], (w, h), turned.getvalue())
    planted["exif_mismatch"] = "turned-9.xml"
    # unreadable_image: half a JPEG.
    data = (raccoon / "images" / "raccoon-10.jpg").read_bytes()
    add(train, "broken.jpg", boxes["raccoon-10.jpg"][2], None, data[: len(data) // 2])
    planted["unreadable_image"] = "broken.jpg"
    w, h, objs = boxes["raccoon-12.jpg"]
    add(test, "raccoon-12.jpg", [("Raccoon", objs[0][1])])  # class_name_variant (case)
    planted["class_name_variant"] = "raccoon-12.xml"
    add(test, "raccoon-13.jpg", [])  # empty_image
    planted["empty_image"] = "raccoon-13.xml"
    (root / "Annotations" / "bad.xml").write_text("<annotation><filename>x.jpg</filename>\n<object>\n</annotation>")
    test.append("bad")  # bad_annotation
    planted["bad_annotation"] = "bad.xml"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(test) + "\n")
    return {"root": root, "planted": planted, "raccoon": raccoon}


def _tree_digest(root: Path) -> str:
    """A digest of every file's path and bytes under root."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_check_finds_every_planted_fault_and_nothing_else(faulty, run_detkit):
    root = faulty["root"]
    code, out, err = run_detkit("dataset", "check", "--type", "voc", "--data-dir", root, "--split", "train",
                                "--split", "test", "--json")
    findings = [json.loads(line) for line in out.splitlines()]
    by_kind = defaultdict(list)
    for f in findings:
        assert {"kind", "severity", "file", "message", "fix", "split"} <= set(f), f
        by_kind[f["kind"]].append(f)
    for kind, file in faulty["planted"].items():
        assert any(os.path.basename(f["file"].split(" line ")[0]) == file for f in by_kind[kind]), (kind, by_kind[kind])
    # Nothing else: the skunk and "Raccoon" are rare (and absent from one split); nothing beyond the planted files.
    planted_files = set(faulty["planted"].values())
    for f in findings:
        assert os.path.basename(f["file"].split(" line ")[0]) in planted_files, f
    assert {f["kind"] for f in findings} == set(faulty["planted"])
    box = by_kind["box_outside"][0]
    assert box["box"][2] - box["box"][0] == 80 and "sticks out of the" in box["message"]
    assert by_kind["exif_mismatch"][0]["severity"] == "error"
    assert code == 1 and err.strip().splitlines()[-1].startswith("detkit: error: dataset check: 3 findings would "
                                                                 "break training")
    # The text groups by kind, worst first, with counts.
    code, text, _ = run_detkit("dataset", "check", "--type", "voc", "--data-dir", root, "--split", "train",
                               "--split", "test")
    headers = [line.split(" (")[0] for line in text.splitlines() if line and not line.startswith(("  ", "check"))]
    assert headers[:3] == ["error bad_annotation", "error exif_mismatch", "error class_name_variant"]
    assert "warning cross_split_duplicate" in headers and headers[-1] == "note empty_image"


def test_fix_writes_a_corrected_copy_that_trains_and_leaves_the_source_alone(faulty, run_detkit, tmp_path):
    root = faulty["root"]
    before = _tree_digest(root)
    out = tmp_path / "fixed"
    code, _, err = run_detkit("dataset", "check", "--type", "voc", "--data-dir", root, "--split", "train", "--split",
                              "test", "--skip-bad", "--fix", out, "--merge-classes", "Raccoon=raccoon")
    assert code == 0, err
    assert _tree_digest(root) == before
    assert "fixed train:" in err and "1 duplicate boxes dropped" in err and "boxes moved from the upright photo" in err
    summary = json.loads((out / "train-summary.json").read_text())
    assert summary["fixes"]["duplicate boxes dropped"] == 1
    assert summary["merged_classes"] == {"Raccoon": "raccoon"}
    assert json.loads((out / "classes.json").read_text()) == ["raccoon", "skunk"]
    # The turned photo's boxes now sit on its stored pixels: inside its stored width.
    from detkit.datasets.tfrecord import iter_records

    w, h, objs = _boxes(faulty["raccoon"])["raccoon-9.jpg"]
    turned = next(r for r in iter_records(str(out), "train") if r["filename"] == b"turned-9.jpg")
    assert (turned["width"], turned["height"]) == (h, w)  # stored turned by 90 degrees
    # Upright box (x0, y0, x1, y1) of a photo EXIF 6 shows turned clockwise sits at (y0, w - x1, y1, w - x0).
    x0, y0, x1, y1 = objs[0][1]
    assert turned["boxes"][0].tolist() == pytest.approx([y0 / h, (w - x1) / w, y1 / h, (w - x0) / w], abs=1e-6)
    code, text, _ = run_detkit("dataset", "check", out)
    assert code == 0 and "error" not in text.split("\n", 1)[0]
    from detkit.config import load_config
    from detkit.train.trainer import train

    cfg_path = tmp_path / "tiny.yml"
    cfg_path.write_text(tiny_config_yaml(out, tmp_path / "jobs", dataset={"split": "train"},
                                         train={"num_steps": 2, "checkpoint_every_steps": 2}))
    assert train(load_config([str(cfg_path)])).step == 2


def test_transform_stops_on_what_would_break_training_and_no_check_converts(faulty, run_detkit, tmp_path):
    root = faulty["root"]
    args = ["dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "train", "--split", "test",
            "--skip-bad"]
    code, _, err = run_detkit(*args, "--output-dir", tmp_path / "o")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("detkit: error: dataset check: 2 findings would break training "
                                         "(exif_mismatch 1, class_name_variant 1)")
    assert "error exif_mismatch (1)" in err  # the grouped report comes first, on stderr
    assert not (tmp_path / "o").exists()
    code, _, err = run_detkit(*args, "--output-dir", tmp_path / "o", "--no-check")
    assert code == 0 and (tmp_path / "o" / "classes.json").exists()


def test_train_dataset_dir_stops_on_records_that_would_break_training(raccoon, run_detkit, tmp_path, helpers):
    from detkit.datasets.example import Example
    from detkit.datasets.tfrecord import ShardWriter, encode_example

    out = tmp_path / "records"
    out.mkdir()
    data = (raccoon / "images" / "raccoon-1.jpg").read_bytes()
    writer = ShardWriter(str(out), "train", num_shards=1)
    good = Example("a.jpg", "a.jpg", "a", width=650, height=417, boxes=((10, 10, 100, 100),), classes=("raccoon",),
                   difficult=(False,), is_crowd=(False,), image_bytes=data, format="jpeg")
    flat = good.with_boxes([(10, 10, 100, 10)])
    for example in (good, flat):
        writer.write(encode_example(example, {"raccoon": 1}))
    (path,) = writer.close()
    os.replace(path, out / "train-00000-of-00001.tfrecord")
    (out / "classes.json").write_text('["raccoon"]')
    code, _, err = run_detkit("train", "--dataset-dir", out, "--minutes", "1", "-o", f"train.job_dir={tmp_path / 'j'}")
    assert code == 1
    assert "box_degenerate" in err and err.strip().splitlines()[-1].startswith(
        "detkit: error: dataset check: 1 finding would break training (box_degenerate 1); first: "
        f"{out / 'train-00000-of-00001.tfrecord'} record 1: raccoon: zero height")
    assert not (tmp_path / "j").exists()


def test_yolo_coordinates_outside_zero_one_are_reported_as_such(tmp_path, run_detkit, helpers):
    root = tmp_path / "yolo"
    helpers.make_image(root / "images" / "a.jpg", size=(100, 50))
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.9 0.5 0.4 0.2\n")
    (root / "data.yaml").write_text("train: images\nnames: [cat]\n")
    code, out, _ = run_detkit("dataset", "check", "--type", "yolo", "--data-dir", root, "--split", "train", "--json")
    findings = {f["kind"]: f for f in map(json.loads, out.splitlines())}
    assert sorted(findings) == ["box_outside", "rare_class"]  # one box of cat is rare, too
    finding = findings["box_outside"]
    assert code == 0 and finding["kind"] == "box_outside" and finding["box"] == [70.0, 20.0, 110.0, 30.0]
    assert "YOLO coordinates not in [0, 1] (x 0.7 to 1.1" in finding["message"]
    assert finding["file"] == str(root / "labels" / "a.txt")


def test_packaged_raccoon_findings_are_its_real_duplicate_photos(raccoon, run_detkit):
    code, out, _ = run_detkit("dataset", "check", "--type", "csv", "--annotations", raccoon / "data" / "train_labels.csv",
                              "--images-dir", raccoon / "images", "--split", "train", "--json")
    pairs = sorted((os.path.basename(f["image"]), os.path.basename(f["other"]))
                   for f in map(json.loads, out.splitlines()))
    # Four byte-identical copies and three re-saved ones (resized, or with a caption added), all in train.
    assert code == 0 and pairs == [("raccoon-116.jpg", "raccoon-11.jpg"), ("raccoon-45.jpg", "raccoon-21.jpg"),
                                   ("raccoon-50.jpg", "raccoon-52.jpg"), ("raccoon-65.jpg", "raccoon-98.jpg"),
                                   ("raccoon-74.jpg", "raccoon-52.jpg"), ("raccoon-83.jpg", "raccoon-120.jpg"),
                                   ("raccoon-85.jpg", "raccoon-51.jpg")]
