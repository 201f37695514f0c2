"""`detkit checkpoint`: list, info, delete, pack/unpack round trip, SavedModel export round trip."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from detkit import runs
from detkit.errors import DetkitError


def invoke(*args, input=None):
    from detkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def job_copy(tiny_run, tmp_path) -> str:
    """A private copy of the tiny run's job dir: jobs/tiny with ckpt-3 and ckpt-6."""
    target = tmp_path / "jobs"
    shutil.copytree(tiny_run["job_dir"], target)
    return str(target)


def test_list_and_info(job_copy):
    run = os.path.join(job_copy, "tiny")
    runs.record_metrics(run, "ckpt-6", 6, "test", {"map50": 0.125, "coco_ap": 0.05})
    text = ok(invoke("checkpoint", "list", job_copy)).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["RUN", "CHECKPOINT", "STEP", "DATE", "SIZE", "METRICS"]
    assert run in lines[1] and "ckpt-3" in lines[1]
    assert "ckpt-6 *" in lines[2] and "test mAP@0.5 0.125" in lines[2]

    (listed,) = [json.loads(line) for line in ok(invoke("checkpoint", "list", job_copy, "--json")).stdout.splitlines()]
    assert listed["run_dir"] == run
    assert [(c["name"], c["step"], c["latest"]) for c in listed["checkpoints"]] == [("ckpt-3", 3, False),
                                                                                   ("ckpt-6", 6, True)]
    assert listed["checkpoints"][1]["metrics"]["test"]["map50"] == 0.125
    assert all(c["size"] > 0 and c["date"] for c in listed["checkpoints"])

    text = ok(invoke("checkpoint", "info", run)).stdout
    for expected in ("classes      1: raccoon", "model        single_level, small_resnet", "min side 160, max side 224", "6 steps, batch 2",
                     "checkpoints  2 (steps 3, 6)", "test mAP@0.5 0.125"):
        assert expected in text, expected
    info = json.loads(ok(invoke("checkpoint", "info", os.path.join(run, "checkpoints", "ckpt-3"), "--json")).stdout)
    assert info["classes"] == ["raccoon"] and [c["step"] for c in info["checkpoints"]] == [3]
    assert info["config"]["backbone"] == "small_resnet" and info["run_size"] > 0

    result = invoke("checkpoint", "info", os.path.join(job_copy, "nothing"))
    assert isinstance(result.exception, DetkitError)


def test_info_of_an_fpn_run_shows_its_pyramid_anchors(tmp_path):
    run = tmp_path / "fpn"
    run.mkdir()
    (run / "config.yml").write_text("model:\n  architecture: fpn\n  base_network: {name: resnet50_tv, weights: none}\n"
                                    "  rcnn: {reduce_channels: 0}\n  fpn:\n    anchor_sizes: [[16], [32], [64], [128], [256]]\n")
    info = json.loads(ok(invoke("checkpoint", "info", run, "--json")).stdout)
    assert info["config"]["architecture"] == "fpn"
    assert info["config"]["anchors"]["sizes"] == [[16.0], [32.0], [64.0], [128.0], [256.0]]
    assert "model        fpn, " in ok(invoke("checkpoint", "info", run)).stdout


def test_list_names_the_map_by_its_iou_threshold(job_copy):
    run = os.path.join(job_copy, "tiny")
    runs.record_metrics(run, "ckpt-6", 6, "test", {"iou_threshold": 0.75, "map75": 0.25, "coco_ap": 0.05})
    line = ok(invoke("checkpoint", "list", job_copy)).stdout.splitlines()[2]
    assert "test mAP@0.75 0.250" in line and "mAP@0.5" not in line
    (listed,) = [json.loads(x) for x in ok(invoke("checkpoint", "list", job_copy, "--json")).stdout.splitlines()]
    metrics = listed["checkpoints"][1]["metrics"]["test"]
    assert metrics["map75"] == 0.25 and metrics["iou_threshold"] == 0.75 and "map50" not in metrics


def test_delete_checkpoint_and_run(job_copy):
    import tensorflow as tf

    run = os.path.join(job_copy, "tiny")
    ckpt3 = os.path.join(run, "checkpoints", "ckpt-3")
    result = invoke("checkpoint", "delete", ckpt3)  # no terminal to confirm on, no --yes
    assert isinstance(result.exception, DetkitError) and "--yes" in str(result.exception)
    assert os.path.exists(ckpt3 + ".index")

    runs.record_metrics(run, "ckpt-3", 3, "test", {"map50": 0.1})
    ok(invoke("checkpoint", "delete", ckpt3, "--yes"))
    assert not [f for f in os.listdir(os.path.join(run, "checkpoints")) if f.startswith("ckpt-3")]
    state = runs.checkpoints.read_state(os.path.join(run, "checkpoints"))
    assert state["all"] == ["ckpt-6"] and state["latest"] == "ckpt-6"
    assert tf.train.get_checkpoint_state(os.path.join(run, "checkpoints")).all_model_checkpoint_paths[:] == [
        os.path.join(run, "checkpoints", "ckpt-6")]
    assert "ckpt-3" not in runs.read_metrics(run)

    ok(invoke("checkpoint", "delete", run, "--yes"))
    assert not os.path.exists(run)
    assert "no runs" in ok(invoke("checkpoint", "list", job_copy)).stderr


def test_pack_unpack_round_trip_and_predict_from_the_tar(tiny_run, raccoon_dir, tmp_path):
    run = tiny_run["run_dir"]
    tar_path = tmp_path / "tiny.tar"
    ok(invoke("checkpoint", "pack", run, "--output", tar_path))
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert {"detkit-pack.json", "config.yml", "classes.json", "checkpoints/checkpoint",
            "checkpoints/ckpt-6.index", "checkpoints/ckpt-6.data-00000-of-00001"} <= names
    assert not any("ckpt-3" in n for n in names)

    unpacked = tmp_path / "unpacked"
    ok(invoke("checkpoint", "unpack", tar_path, "--output", unpacked))
    for rel in ("config.yml", "classes.json", "checkpoints/ckpt-6.index", "checkpoints/ckpt-6.data-00000-of-00001"):
        assert (unpacked / rel).read_bytes() == open(os.path.join(run, rel), "rb").read(), rel
    assert runs.latest_entry(str(unpacked)).name == "ckpt-6"
    result = invoke("checkpoint", "unpack", tar_path, "--output", unpacked)
    assert isinstance(result.exception, DetkitError) and "--overwrite" in str(result.exception)
    ok(invoke("checkpoint", "unpack", tar_path, "--output", unpacked, "--overwrite"))

    # A chosen older checkpoint, gzipped.
    older = tmp_path / "tiny-3.tar.gz"
    ok(invoke("checkpoint", "pack", run, "--output", older, "--checkpoint", "3"))
    assert runs.read_manifest(str(older))["step"] == 3

    image = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    direct = ok(invoke("predict", image, "--checkpoint", run, "--min-prob", "0.2")).stdout
    from_tar = ok(invoke("predict", image, "--checkpoint", tar_path, "--min-prob", "0.2")).stdout
    from_dir = ok(invoke("predict", image, "--checkpoint", unpacked, "--min-prob", "0.2")).stdout
    assert json.loads(direct)["objects"] and direct == from_tar == from_dir


def test_unpack_refuses_unsafe_or_foreign_archives(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in (("detkit-pack.json", b'{"format": 1, "checkpoint": "ckpt-1"}'), ("../escape.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = invoke("checkpoint", "unpack", evil, "--output", tmp_path / "out")
    assert isinstance(result.exception, DetkitError) and "unsafe" in str(result.exception)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()

    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(evil, "something.tar")
    result = invoke("checkpoint", "unpack", foreign, "--output", tmp_path / "out")
    assert isinstance(result.exception, DetkitError) and "not a packed detkit checkpoint" in str(result.exception)


LOAD_SAVED_MODEL = r"""
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
out = {}
for path in sys.argv[2:]:
    result = serve(image_bytes=tf.constant(open(path, "rb").read()))
    out[path] = {
        "boxes": result["boxes"].numpy().tolist(), "scores": result["scores"].numpy().tolist(),
        "classes": result["classes"].numpy().tolist(),
        "labels": [v.decode() for v in result["labels"].numpy().tolist()],
        "class_names": [v.decode() for v in result["class_names"].numpy().tolist()],
        "image_size": result["image_size"].numpy().tolist(),
    }
assert not any(name.startswith("detkit") for name in sys.modules), "the SavedModel must not need detkit"
print(json.dumps(out))
"""


def test_export_saved_model_round_trip(tiny_run, raccoon_dir, tmp_path):
    from detkit import Detector

    # A plain JPEG, a non-square PNG, and a JPEG whose EXIF orientation (6) rotates it.
    plain = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    png = str(tmp_path / "portrait.png")
    Image.open(os.path.join(raccoon_dir, "images", "raccoon-2.jpg")).convert("RGB").resize((287, 431)).save(png)
    rotated = str(tmp_path / "exif6.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(plain).save(rotated, quality=92, exif=exif.tobytes())
    images = [plain, png, rotated]

    export_dir = tmp_path / "exported"
    ok(invoke("checkpoint", "export", tiny_run["run_dir"], "--output", export_dir, "--min-prob", "0.2"))
    assert (export_dir / "saved_model.pb").is_file()
    assert json.loads((export_dir / "assets" / "classes.json").read_text()) == ["raccoon"]
    assert "small_resnet" in (export_dir / "assets" / "config.yml").read_text()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export")]  # staged, then renamed

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", LOAD_SAVED_MODEL, str(export_dir), *images],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])

    cli = [json.loads(line) for line in ok(invoke("predict", *images, "--checkpoint", tiny_run["run_dir"],
                                                  "--min-prob", "0.2")).stdout.splitlines()]
    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    from detkit.inputs import read_image_array

    for path, record in zip(images, cli):
        got = served[path]
        assert got["class_names"] == ["raccoon"]
        assert got["image_size"] == [record["height"], record["width"]]
        assert len(got["boxes"]) == len(record["objects"]) > 0, path
        np.testing.assert_allclose(got["boxes"], [o["bbox"] for o in record["objects"]], atol=0.006)  # JSON rounding
        np.testing.assert_allclose(got["scores"], [o["prob"] for o in record["objects"]], atol=6e-5)
        assert got["labels"] == [o["label"] for o in record["objects"]]
        assert set(got["classes"]) == {1}
        exact = detector.predict(read_image_array(path), min_prob=0.2)
        np.testing.assert_allclose(got["boxes"], [d.bbox for d in exact], atol=1e-3)
        np.testing.assert_allclose(got["scores"], [d.prob for d in exact], atol=1e-3)
    width, height = Image.open(plain).size
    assert served[rotated]["image_size"] == [width, height]  # upright (turned a quarter), as detkit predict reads it

    result = invoke("checkpoint", "export", tiny_run["run_dir"], "--output", export_dir)
    assert isinstance(result.exception, DetkitError) and "--overwrite" in str(result.exception)
