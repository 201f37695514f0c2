"""`detkit predict`: JSON lines, original-image coordinates, EXIF, folders/globs, videos, bad input, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from detkit.errors import DetkitError


def invoke(*args):
    """Run the CLI in-process (one TensorFlow import for the session)."""
    from detkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def records(result) -> list[dict]:
    assert result.exit_code == 0, (result.output, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _raccoon(raccoon_dir, n=1):
    return os.path.join(raccoon_dir, "images", f"raccoon-{n}.jpg")


def _expected(detector, image: np.ndarray, min_prob: float):
    """The model's raw detections, scaled from the resized input back to `image` pixels by hand."""
    import tensorflow as tf

    from detkit.models.transform import resize_scale

    cfg = detector.config.dataset.image
    h, w = image.shape[:2]
    scale = resize_scale(h, w, cfg.min_size, cfg.max_size)
    new_h, new_w = (max(1, int(v)) for v in tf.round(tf.constant([h, w], tf.float32) * scale).numpy())
    resized = tf.image.resize(tf.cast(image, tf.float32), [new_h, new_w])
    out = detector.model.stages(resized[None], tf.constant([[new_h, new_w]]))
    n = int(out["num_detections"][0])
    boxes = out["boxes"][0, :n].numpy() * np.array([w / new_w, h / new_h, w / new_w, h / new_h])
    scores = out["scores"][0, :n].numpy()
    keep = scores >= min_prob
    return boxes[keep], scores[keep], (new_h, new_w)


def test_json_lines_in_original_image_pixels(tiny_run, raccoon_dir, tmp_path):
    from detkit import Detector

    # A landscape photo and a portrait (non-square, different aspect) copy of another one.
    landscape = _raccoon(raccoon_dir, 1)  # 400 x 257
    portrait = str(tmp_path / "portrait.png")
    Image.open(_raccoon(raccoon_dir, 2)).convert("RGB").resize((301, 517)).save(portrait)
    result = invoke("predict", landscape, portrait, "--checkpoint", tiny_run["run_dir"], "--min-prob", "0.1")
    out = records(result)
    assert [r["file"] for r in out] == [landscape, portrait]
    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    for record in out:
        assert set(record) == {"file", "width", "height", "objects"}
        image = np.asarray(Image.open(record["file"]).convert("RGB"))
        assert (record["height"], record["width"]) == image.shape[:2]
        assert record["objects"], "the tiny model gives low-score boxes everywhere; min-prob 0.1 keeps some"
        for obj in record["objects"]:
            assert set(obj) == {"bbox", "label", "prob"}
            assert obj["label"] == "raccoon"
            assert 0.1 <= obj["prob"] <= 1.0
            xmin, ymin, xmax, ymax = obj["bbox"]
            assert 0 <= xmin <= xmax <= record["width"] and 0 <= ymin <= ymax <= record["height"]
        boxes, scores, resized_hw = _expected(detector, image, 0.1)
        got = np.array([o["bbox"] for o in record["objects"]])
        np.testing.assert_allclose(got, boxes[: len(got)], atol=0.01)  # to_json rounds to 0.01 px
        np.testing.assert_allclose([o["prob"] for o in record["objects"]], scores[: len(got)], atol=1e-4)
        # The boxes are in original pixels, not in the (smaller) network input.
        assert got[:, 2].max() > resized_hw[1] or got[:, 3].max() > resized_hw[0]
    assert "predicted 2 image(s)" in result.stderr


def test_exif_rotated_photo_gives_boxes_in_the_upright_frame(tiny_run, raccoon_dir, tmp_path):
    source = Image.open(_raccoon(raccoon_dir, 1)).convert("RGB")  # stored 400 x 257 (landscape)
    width, height = source.size
    assert width > height
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated_by_exif = str(tmp_path / "exif6.jpg")
    source.save(rotated_by_exif, quality=95, exif=exif.tobytes())
    # The same pixels turned upright by hand, without EXIF: the reference.
    with Image.open(rotated_by_exif) as im:
        upright = im.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    by_hand = str(tmp_path / "upright.png")
    upright.save(by_hand)
    out = records(invoke("predict", rotated_by_exif, by_hand, "--checkpoint", tiny_run["run_dir"], "--min-prob", "0"))
    exif_record, hand_record = out
    assert (exif_record["width"], exif_record["height"]) == (height, width)  # swapped relative to the stored pixels
    assert exif_record["objects"] == hand_record["objects"]
    boxes = np.array([o["bbox"] for o in exif_record["objects"]])
    assert boxes[:, 2].max() <= height and boxes[:, 3].max() <= width
    assert boxes[:, 3].max() > height  # boxes reach below the stored height: they are in the rotated frame


def test_folder_glob_output_file_and_drawn_images(tiny_run, raccoon_dir, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for n, rel in ((1, "a.jpg"), (2, "sub/b.jpg"), (3, "sub/c.png")):
        Image.open(_raccoon(raccoon_dir, n)).save(folder / rel)
    globbed = os.path.join(raccoon_dir, "images", "raccoon-19*.jpg")  # 190..199 and 19: 11 images
    out_file = tmp_path / "out" / "pred.jsonl"
    drawn = tmp_path / "drawn"
    result = invoke("predict", folder, globbed, "--checkpoint", tiny_run["run_dir"], "-f", out_file, "-d", drawn,
                    "--min-prob", "0.2")
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout == ""
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 3 + 11
    assert [r["file"] for r in lines[:3]] == [str(folder / "a.jpg"), str(folder / "sub" / "b.jpg"),
                                              str(folder / "sub" / "c.png")]
    for rel in ("a.jpg", "sub/b.jpg", "sub/c.png", "raccoon-19.jpg", "raccoon-199.jpg"):
        assert (drawn / rel).is_file(), rel
    with Image.open(drawn / "a.jpg") as im, Image.open(folder / "a.jpg") as orig:
        assert im.size == orig.size
        assert np.abs(np.asarray(im, np.int16) - np.asarray(orig.convert("RGB"), np.int16)).max() > 100  # boxes drawn
    assert "predict" in result.stderr  # progress bar for more than a few images
    assert not list(out_file.parent.glob(".*tmp*"))  # written atomically, nothing left behind


def test_video_gives_one_record_per_frame_and_a_drawn_video(tiny_run, raccoon_dir, tmp_path):
    import imageio.v2 as imageio

    frame = np.asarray(Image.open(_raccoon(raccoon_dir, 1)).convert("RGB").resize((320, 200)))
    video = str(tmp_path / "clip.mp4")
    with imageio.get_writer(video, fps=10, codec="libx264", macro_block_size=1) as writer:
        for i in range(5):
            writer.append_data(np.roll(frame, 8 * i, axis=1))
    drawn = tmp_path / "drawn"
    out = records(invoke("predict", video, "--checkpoint", tiny_run["run_dir"], "-d", drawn, "--min-prob", "0.1"))
    assert [r["frame"] for r in out] == [0, 1, 2, 3, 4]
    assert [r["time"] for r in out] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(r["file"] == video and (r["width"], r["height"]) == (320, 200) for r in out)
    assert all(isinstance(r["objects"], list) for r in out)
    with imageio.get_reader(str(drawn / "clip.mp4")) as reader:
        assert sum(1 for _ in reader) == 5


def test_unreadable_image_is_reported_and_skipped(tiny_run, raccoon_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    result = invoke("predict", bad, _raccoon(raccoon_dir, 1), "--checkpoint", tiny_run["run_dir"])
    out = records(result)
    assert [r["file"] for r in out] == [_raccoon(raccoon_dir, 1)]
    warnings = [line for line in result.stderr.splitlines() if "broken.jpg" in line]
    assert len(warnings) == 1 and "cannot read image" in warnings[0]

    result = invoke("predict", bad, "--checkpoint", tiny_run["run_dir"])
    assert isinstance(result.exception, DetkitError) and result.exception.exit_code == 1
    assert "none of the 1 input(s) could be read" in str(result.exception)


def test_class_filters_and_limits(tiny_run, raccoon_dir):
    image = _raccoon(raccoon_dir, 1)
    run = tiny_run["run_dir"]
    (capped,) = records(invoke("predict", image, "--checkpoint", run, "--min-prob", "0", "--max-detections", "3"))
    assert len(capped["objects"]) == 3
    (ignored,) = records(invoke("predict", image, "--checkpoint", run, "--min-prob", "0", "--ignore-classes", "raccoon"))
    assert ignored["objects"] == []
    (only,) = records(invoke("predict", image, "--checkpoint", run, "--min-prob", "0", "--only-classes", "raccoon",
                             "-o", "predict.max_detections=5"))
    assert len(only["objects"]) == 5
    result = invoke("predict", image, "--checkpoint", run, "--only-classes", "racoon")
    assert isinstance(result.exception, DetkitError) and "unknown class racoon" in str(result.exception)


def test_batches_of_same_size_images_match_single_images(tiny_run, raccoon_dir, tmp_path):
    # Same-size images need no padding in a batch, so batching must not change their detections.
    source = Image.open(_raccoon(raccoon_dir, 1))
    files = []
    for n in range(3):
        files.append(str(tmp_path / f"copy{n}.png"))
        source.rotate(180 * (n % 2)).save(files[-1])
    files.append(os.path.join(str(tmp_path), ".", "copy0.png"))  # the same file again: read once
    single = records(invoke("predict", *files, "--checkpoint", tiny_run["run_dir"], "--min-prob", "0.2"))
    batched = records(invoke("predict", *files, "--checkpoint", tiny_run["run_dir"], "--min-prob", "0.2",
                             "--batch-size", "4"))
    assert [r["file"] for r in batched] == [r["file"] for r in single] == files[:3]
    for a, b in zip(single, batched):
        assert len(a["objects"]) == len(b["objects"])
        np.testing.assert_allclose([o["bbox"] for o in a["objects"]], [o["bbox"] for o in b["objects"]], atol=0.02)
        np.testing.assert_allclose([o["prob"] for o in a["objects"]], [o["prob"] for o in b["objects"]], atol=2e-4)


def test_predict_with_config_finds_the_run(tiny_run, raccoon_dir):
    out = records(invoke("predict", _raccoon(raccoon_dir, 1), "-c", tiny_run["config"], "-o", "predict.min_prob=0.2"))
    assert out[0]["objects"] and min(o["prob"] for o in out[0]["objects"]) >= 0.2


def test_without_a_checkpoint_one_line_says_how_to_get_one(tmp_path, raccoon_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore", DETKIT_HOME=str(tmp_path / "no-models"))
    proc = subprocess.run([sys.executable, "-m", "detkit", "predict", _raccoon(raccoon_dir, 1)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("detkit: error: ")
    assert "detkit train -c config.yml" in lines[0] and "--checkpoint RUN_DIR" in lines[0]
    assert "`detkit checkpoint download accurate`" in lines[0]

    config = tmp_path / "cfg.yml"
    config.write_text(f"train: {{job_dir: {tmp_path / 'jobs'}, run_name: nothing-yet}}\n")
    proc = subprocess.run([sys.executable, "-m", "detkit", "predict", _raccoon(raccoon_dir, 1), "-c", str(config)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "nothing-yet" in proc.stderr and "detkit train -c config.yml" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_two_loads_of_a_checkpoint_have_the_same_weights(tiny_run):
    import keras

    from detkit.runs import load_class_names, load_run_config
    from detkit.models.build import build_detector
    from detkit.runs.restore import restore_model

    cfg = load_run_config(tiny_run["run_dir"])
    names = load_class_names(tiny_run["run_dir"])
    models = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = build_detector(cfg, len(names))
        restore_model(model, tiny_run["checkpoint"])
        models.append(model)
    differ = [a.path for a, b in zip(models[0].variables, models[1].variables)
              if not np.array_equal(a.numpy(), b.numpy())]
    assert differ == []
