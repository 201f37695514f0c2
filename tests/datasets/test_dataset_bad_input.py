"""Bad input: one-line errors naming the place, skipped images reported, nothing half-written."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from detkit.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def _convert_csv(cli, helpers, tmp_path, rows, *extra, error=None, out="out"):
    ann = helpers.write_csv(tmp_path / "labels.csv", rows)
    return cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
               "--split", "s", "--output-dir", tmp_path / out, *extra, error=error)


def test_corrupt_truncated_and_non_images_are_skipped_and_reported(tmp_path, cli, helpers):
    im = tmp_path / "im"
    helpers.make_image(im / "good.jpg", size=(80, 60))
    full = helpers.make_image(tmp_path / "full.jpg", size=(400, 300)).read_bytes()
    (im / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (im / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    (im / "notes.jpg").write_text("this is not an image\n")
    (im / "empty.png").write_bytes(b"")
    helpers.make_image(im / "bitmap.bmp", fmt="BMP")
    names = ["good.jpg", "truncated.jpg", "garbage.jpg", "notes.jpg", "empty.png", "bitmap.bmp"]
    _convert_csv(cli, helpers, tmp_path, [(n, 0, 0, "cat", 1, 1, 9, 9) for n in names])
    s = helpers.summary(tmp_path / "out", "s")
    assert s["images"] == 1
    reasons = {os.path.basename(d["file"]): d["reason"] for d in s["skipped"]}
    assert sorted(reasons) == sorted(names[1:])
    assert "truncated" in reasons["truncated.jpg"]
    assert "corrupt" in reasons["garbage.jpg"] or "not an image" in reasons["garbage.jpg"]
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["empty.png"] == "empty file"
    assert reasons["bitmap.bmp"].startswith("unsupported image format BMP")
    assert [r["filename"] for r in helpers.records(tmp_path / "out", "s")] == [b"good.jpg"]


def test_grayscale_rgba_palette_pass_through_and_cmyk_16bit_are_reencoded(tmp_path, cli, helpers):
    import tensorflow as tf

    im = tmp_path / "im"
    helpers.make_image(im / "gray.png", mode="L", fmt="PNG")
    helpers.make_image(im / "rgba.png", mode="RGBA", fmt="PNG")
    helpers.make_image(im / "palette.png", mode="P", fmt="PNG")
    helpers.make_image(im / "gray.jpg", mode="L")
    helpers.make_image(im / "cmyk.jpg", mode="CMYK")
    deep = np.full((48, 64), 65535, np.uint16)
    deep[:, :32] = 256 * 100
    Image.fromarray(deep).save(im / "deep.png")
    names = ["gray.png", "rgba.png", "palette.png", "gray.jpg", "cmyk.jpg", "deep.png"]
    _convert_csv(cli, helpers, tmp_path, [(n, 64, 48, "cat", 1, 1, 9, 9) for n in names])
    s = helpers.summary(tmp_path / "out", "s")
    assert (s["images"], s["skipped"]) == (6, [])
    assert {os.path.basename(d["file"]): d["reason"] for d in s["reencoded"]} == {
        "cmyk.jpg": "CMYK JPEG re-encoded as RGB", "deep.png": "16-bit PNG re-encoded as 8-bit"}
    recs = {r["filename"].decode(): r for r in helpers.records(tmp_path / "out", "s")}
    for name in names:
        rec = recs[name]
        pixels = tf.io.decode_image(rec["image"], channels=3).numpy()
        assert pixels.shape == (48, 64, 3), name
        assert rec["format"] == (b"png" if name.endswith(".png") else b"jpeg")
        if name not in ("cmyk.jpg", "deep.png"):
            assert rec["image"] == (im / name).read_bytes(), name  # original bytes, not re-encoded
    deep_px = tf.io.decode_png(recs["deep.png"]["image"], channels=3).numpy()
    assert deep_px[0, 0, 0] == 100 and deep_px[0, 63, 0] == 255  # scaled to 8 bits, not clipped


def test_malformed_xml_names_file_and_line(tmp_path, cli, helpers):
    root = tmp_path / "voc"
    helpers.make_image(root / "images" / "a.jpg")
    helpers.make_image(root / "images" / "b.jpg")
    helpers.write_voc(root / "annotations" / "a.xml", "a.jpg", (64, 48), [("cat", (1, 1, 9, 9))])
    (root / "annotations" / "b.xml").write_text("<annotation>\n<filename>b.jpg</filename>\n<object>\n</annotation>\n")
    args = ["dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "s"]
    err = cli(*args, "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err).startswith(f"{root / 'annotations' / 'b.xml'} line 4, column 3: malformed XML (mismatched tag)")
    assert not (tmp_path / "o").exists()
    cli(*args, "--output-dir", tmp_path / "o", "--skip-bad")
    s = helpers.summary(tmp_path / "o", "s")
    assert s["images"] == 1
    assert s["skipped"] == [{"file": f"{root / 'annotations' / 'b.xml'} line 4, column 3",
                             "reason": "malformed XML (mismatched tag)"}]


def test_bad_xml_element_is_named(tmp_path, cli, helpers):
    root = tmp_path / "voc"
    helpers.make_image(root / "images" / "a.jpg")
    helpers.write_voc(root / "annotations" / "a.xml", "a.jpg", (64, 48), [("cat", (1, 1, 9, 9)), ("dog", (1, "x", 9, 9))])
    err = cli("dataset", "transform", "--type", "voc", "--data-dir", root, "--split", "s",
              "--output-dir", tmp_path / "o", error=DatasetError)
    assert "a.xml: <object> #2 (dog) <bndbox><ymin>: expected a number, got 'x'" in str(err)


def test_malformed_json_names_line_and_column(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    ann = tmp_path / "bad.json"
    ann.write_text('{\n  "images": [{"id": 1, "file_name": "a.jpg"},],\n  "annotations": []\n}\n')
    err = cli("dataset", "transform", "--type", "coco", "--annotations", ann, "--images-dir", tmp_path / "im",
              "--split", "s", "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err).startswith(f"{ann} line 2, column 46: invalid JSON (Expecting value)")


def test_bad_coco_annotation_names_the_element(tmp_path, cli, helpers):
    for n in ("a.jpg", "b.jpg"):
        helpers.make_image(tmp_path / "im" / n)
    ann = helpers.write_coco(tmp_path / "l.json", [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
                             [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
                              {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8]}],
                             [{"id": 1, "name": "cat"}])
    args = ["dataset", "transform", "--type", "coco", "--annotations", ann, "--images-dir", tmp_path / "im", "--split", "s"]
    err = cli(*args, "--output-dir", tmp_path / "o", error=DatasetError)
    assert f"{ann}: annotations[1]: bbox must be [x, y, width, height], got [1, 1, 8]" in str(err)
    cli(*args, "--output-dir", tmp_path / "o", "--skip-bad")
    assert [r["filename"] for r in helpers.records(tmp_path / "o", "s")] == [b"a.jpg"]
    assert helpers.summary(tmp_path / "o", "s")["skipped"][0]["file"] == f"{ann}: annotations[1]"


def test_malformed_csv_row_names_the_line(tmp_path, cli, helpers):
    for n in ("a.jpg", "b.jpg"):
        helpers.make_image(tmp_path / "im" / n)
    rows = [("a.jpg", 64, 48, "cat", 1, 1, 9, 9), ("b.jpg", 64, 48, "cat", "abc", 1, 9, 9),
            ("b.jpg", 64, 48, "cat", 2, 2, 9, 9)]
    err = _convert_csv(cli, helpers, tmp_path, rows, error=DatasetError)
    assert f"{tmp_path / 'labels.csv'} line 3: column 'xmin': expected a number, got 'abc'" in str(err)
    _convert_csv(cli, helpers, tmp_path, rows, "--skip-bad")
    s = helpers.summary(tmp_path / "out", "s")
    assert s["images"] == 1  # b.jpg's other row would leave it half labelled: the whole image is skipped
    assert s["skipped"][0]["file"] == f"{tmp_path / 'labels.csv'} line 3"


def test_csv_wrong_field_count_and_missing_columns(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    err = _convert_csv(cli, helpers, tmp_path, [("a.jpg", 64, 48, "cat", 1, 1, 9)], error=DatasetError)
    assert "labels.csv line 2: expected 8 fields, got 7" in str(err)
    ann = helpers.write_csv(tmp_path / "cols.csv", [("a.jpg", 1, 1, 9, 9)], header="filename,x,y,w,h")
    err = cli("dataset", "transform", "--type", "csv", "--annotations", ann, "--images-dir", tmp_path / "im",
              "--split", "s", "--output-dir", tmp_path / "o", error=DatasetError)
    assert "cols.csv line 1: header 'filename,x,y,w,h' has no column for class, xmin, ymin, xmax, ymax" in str(err)


def test_cli_error_is_one_line_without_traceback(tmp_path, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    ann = helpers.write_csv(tmp_path / "labels.csv", [("a.jpg", 64, 48, "cat", 1, 1, 9, "oops")])
    proc = subprocess.run(
        [sys.executable, "-m", "detkit", "dataset", "transform", "--type", "csv", "--annotations", str(ann),
         "--images-dir", str(tmp_path / "im"), "--split", "s", "--output-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("detkit: error: ") and "labels.csv line 2: column 'ymax'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_inputs_are_named(tmp_path, cli):
    err = cli("dataset", "transform", "--type", "voc", "--data-dir", tmp_path / "nowhere", "--split", "s",
              "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err) == f"data directory {tmp_path / 'nowhere'}: not found"
    err = cli("dataset", "transform", "--type", "csv", "--annotations", tmp_path / "x.csv", "--images-dir", tmp_path,
              "--split", "s", "--output-dir", tmp_path / "o", error=DatasetError)
    assert str(err) == f"annotations file {tmp_path / 'x.csv'}: not found"


def test_missing_image_is_an_error_unless_skip_bad(tmp_path, cli, helpers):
    helpers.make_image(tmp_path / "im" / "a.jpg")
    rows = [("a.jpg", 64, 48, "cat", 1, 1, 9, 9), ("gone.jpg", 64, 48, "cat", 1, 1, 9, 9)]
    err = _convert_csv(cli, helpers, tmp_path, rows, error=DatasetError)
    assert f"labels.csv line 3: image {tmp_path / 'im' / 'gone.jpg'} not found" in str(err)
    _convert_csv(cli, helpers, tmp_path, rows, "--skip-bad")
    assert helpers.summary(tmp_path / "out", "s")["images"] == 1


def test_empty_dataset_is_an_error(tmp_path, cli, helpers):
    (tmp_path / "im").mkdir()
    err = _convert_csv(cli, helpers, tmp_path, [], error=DatasetError)
    assert "the annotations list no images" in str(err)
    (tmp_path / "im" / "a.jpg").write_bytes(b"not a jpeg")
    err = _convert_csv(cli, helpers, tmp_path, [("a.jpg", 64, 48, "cat", 1, 1, 9, 9)], error=DatasetError)
    assert "no usable images (1 skipped; first:" in str(err) and "not an image" in str(err)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_overwrite(tmp_path, cli, helpers):
    for i in range(4):
        helpers.make_image(tmp_path / "im" / f"{i}.jpg")
    rows = [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(4)]
    _convert_csv(cli, helpers, tmp_path, rows, "--num-shards", "3")
    out = tmp_path / "out"
    before = sorted(p.name for p in out.iterdir())
    err = _convert_csv(cli, helpers, tmp_path, rows, error=DatasetError)
    assert "already holds classes.json" in str(err) and "--overwrite" in str(err)
    assert sorted(p.name for p in out.iterdir()) == before
    _convert_csv(cli, helpers, tmp_path, rows[:2], "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "s-00000-of-00001.tfrecord", "s-summary.json"]
    assert len(helpers.records(out, "s")) == 2


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, cli, helpers, monkeypatch):
    import detkit.datasets.transform as transform_module

    for i in range(5):
        helpers.make_image(tmp_path / "im" / f"{i}.jpg")
    rows = [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(5)]
    real = transform_module.encode_example
    calls = []

    def failing(example, labels):
        calls.append(example.filename)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(example, labels)

    monkeypatch.setattr(transform_module, "encode_example", failing)
    _convert_csv(cli, helpers, tmp_path, rows, error=RuntimeError)
    assert not (tmp_path / "out").exists()  # created by the run, so removed with the staging dir

    monkeypatch.setattr(transform_module, "encode_example", real)
    _convert_csv(cli, helpers, tmp_path, rows[:1])
    old = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setattr(transform_module, "encode_example", failing)
    calls.clear()
    _convert_csv(cli, helpers, tmp_path, rows, "--overwrite", error=RuntimeError)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == old  # old output untouched, no temp dir


def test_adding_a_split_later_keeps_the_existing_class_map(tmp_path, cli, helpers):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        helpers.make_image(tmp_path / "im" / n)
    out = tmp_path / "out"
    train = helpers.write_csv(tmp_path / "train.csv", [("a.jpg", 64, 48, "zebra", 1, 1, 9, 9),
                                                       ("b.jpg", 64, 48, "ant", 1, 1, 9, 9)])
    cli("dataset", "transform", "--type", "csv", "--annotations", train, "--images-dir", tmp_path / "im",
        "--split", "train", "--output-dir", out)
    test = helpers.write_csv(tmp_path / "test.csv", [("c.jpg", 64, 48, "zebra", 1, 1, 9, 9)])
    args = ["dataset", "transform", "--type", "csv", "--annotations", test, "--images-dir", tmp_path / "im",
            "--split", "test", "--output-dir", out]
    err = cli(*args, error=DatasetError)
    assert "already holds classes.json" in str(err)
    cli(*args, "--overwrite")
    assert helpers.classes(out) == ["ant", "zebra"]  # not ["zebra"]: train's labels stay valid
    assert helpers.records(out, "test")[0]["labels"].tolist() == [2]
    assert len(helpers.records(out, "train")) == 2
    other = helpers.write_csv(tmp_path / "other.csv", [("c.jpg", 64, 48, "yak", 1, 1, 9, 9)])
    err = cli("dataset", "transform", "--type", "csv", "--annotations", other, "--images-dir", tmp_path / "im",
              "--split", "test", "--output-dir", out, "--overwrite", error=DatasetError)
    assert "new data also has ['yak']" in str(err)
    assert helpers.records(out, "test")[0]["labels"].tolist() == [2]  # refused before touching anything


def test_overwrite_swaps_the_whole_directory_keeping_other_splits_and_files(tmp_path, cli, helpers, monkeypatch):
    import detkit.utils.atomic as atomic

    for i in range(3):
        helpers.make_image(tmp_path / "im" / f"{i}.jpg")
    rows = [(f"{i}.jpg", 64, 48, "cat", 1, 1, 9, 9) for i in range(3)]
    out = tmp_path / "out"
    for split in ("s", "t"):
        csv = helpers.write_csv(tmp_path / f"{split}.csv", rows)
        cli("dataset", "transform", "--type", "csv", "--annotations", csv, "--images-dir", tmp_path / "im",
            "--split", split, "--output-dir", out, *(["--overwrite"] if split == "t" else []))
    (out / "notes.txt").write_text("mine")
    (out / "check").mkdir()
    (out / "check" / "a.jpg").write_bytes(b"drawn")
    kept = {n: (out / n).read_bytes() for n in ("t-00000-of-00001.tfrecord", "t-summary.json")}
    swaps = []
    real = atomic.replace_dir
    monkeypatch.setattr("detkit.datasets.output.replace_dir", lambda a, b: (swaps.append((a, b)), real(a, b)))
    _convert_csv(cli, helpers, tmp_path, rows[:1], "--overwrite", "--num-shards", "2")
    # One directory swap published everything: shards, summary and classes.json of the new split together.
    assert len(swaps) == 1 and os.path.realpath(swaps[0][1]) == os.path.realpath(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "check", "classes.json", "notes.txt", "s-00000-of-00001.tfrecord", "s-summary.json",
        "t-00000-of-00001.tfrecord", "t-summary.json"]
    assert len(helpers.records(out, "s")) == 1 and len(helpers.records(out, "t")) == 3
    assert {n: (out / n).read_bytes() for n in kept} == kept
    assert (out / "notes.txt").read_text() == "mine" and (out / "check" / "a.jpg").read_bytes() == b"drawn"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
