"""`detkit predict`, `eval`, `checkpoint export` and `server web` given a missing, damaged or mismatched
checkpoint, and unreadable inputs among good ones: exit code != 0 with one line naming the file and the fix,
or a counted skip for unreadable images in `predict` (its documented behaviour).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from robust_helpers import png_header_only

DAMAGES = ["missing", "empty_dir", "no_config", "config_garbage", "no_classes", "other_class_count",
           "truncated_data", "garbage_index", "garbage_tar"]

# What each damage answers: a fragment of the one error line (the path is checked separately).
EXPECTED = {
    "missing": "no such run or checkpoint; train one with `detkit train -c config.yml`",
    "empty_dir": "not a run directory (no config.yml or checkpoints/ in it)",
    "no_config": "no config.yml beside the checkpoint; cannot rebuild the model",
    "config_garbage": "config.yml line 2: cannot read run config (expected ',' or ']', but got '<stream end>'); "
                      "restore the config.yml the run was trained with",
    "no_classes": "classes.json: cannot read class map (No such file or directory); restore the classes.json",
    "other_class_count": "classes.json lists 3 class(es) but the checkpoint was trained for 1",
    "truncated_data": "the checkpoint is damaged",
    "garbage_index": "the checkpoint is damaged",
    "garbage_tar": "or `detkit checkpoint pack` file (not a tar archive)",
}


def _damage(tiny_run, tmp_path: Path, damage: str) -> Path:
    """A copy of the tiny run with one thing wrong; returns what to pass as --checkpoint."""
    run = tmp_path / "run"
    if damage == "missing":
        return tmp_path / "no-such-run"
    if damage == "empty_dir":
        run.mkdir()
        return run
    if damage == "garbage_tar":
        tar = tmp_path / "model.tar"
        tar.write_bytes(os.urandom(4096))
        return tar
    shutil.copytree(tiny_run["run_dir"], run)
    prefix = run / "checkpoints" / "ckpt-6"
    if damage == "no_config":
        (run / "config.yml").unlink()
    elif damage == "config_garbage":
        (run / "config.yml").write_text("model: [unclosed\n")
    elif damage == "no_classes":
        (run / "classes.json").unlink()
    elif damage == "other_class_count":
        (run / "classes.json").write_text(json.dumps(["raccoon", "cat", "dog"]))
    elif damage == "truncated_data":
        data = next(prefix.parent.glob("ckpt-6.data-*"))
        data.write_bytes(data.read_bytes()[:2000])
    elif damage == "garbage_index":
        (prefix.parent / "ckpt-6.index").write_bytes(os.urandom(500))
    return run


def _command(name: str, target: Path, image: str, tmp_path: Path) -> list:
    if name == "predict":
        return ["predict", image, "--checkpoint", target, "--no-progress"]
    if name == "eval":
        return ["eval", "--checkpoint", target, "--no-record", "--no-progress"]
    if name == "export":
        return ["checkpoint", "export", target, "--output", tmp_path / "exported"]
    return ["server", "web", "--checkpoint", target, "--port", "0", "--no-access-log"]


@pytest.fixture
def no_serving(monkeypatch):
    """Make `server web` fail instead of serving forever, should a damaged model ever load."""
    import uvicorn

    def refuse(self, *args, **kwargs):
        raise AssertionError("the server started with a damaged checkpoint")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)


@pytest.mark.parametrize("command", ["predict", "eval", "export", "server"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_bad_checkpoint_is_one_line(tiny_run, raccoon_dir, tmp_path, detkit, no_serving, command, damage):
    target = _damage(tiny_run, tmp_path, damage)
    image = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    res = detkit(*_command(command, target, image, tmp_path))
    assert res.code == 1, res.err[-2000:]
    line = res.error_line()
    assert EXPECTED[damage] in line, line
    assert str(target) in line or str(target / "checkpoints") in line, line
    assert res.out == ""
    assert not (tmp_path / "exported").exists()


def test_predict_skips_and_counts_unreadable_images_among_good_ones(tiny_run, raccoon_dir, tmp_path, detkit):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = Path(raccoon_dir) / "images"
    for name in ("raccoon-1.jpg", "raccoon-2.jpg"):
        shutil.copy(good / name, folder / name)
    full = (good / "raccoon-3.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not a png\n")
    Image.new("RGB", (8, 8)).save(folder / "ok.gif")  # a format predict reads though transform does not
    png_header_only(folder / "bomb.png", 40000, 40000)  # 1.6 G pixels: refused from its header
    res = detkit("predict", folder, "--checkpoint", tiny_run["run_dir"], "--no-progress")
    assert res.code == 0, res.err
    files = [json.loads(line)["file"] for line in res.out.splitlines()]
    assert sorted(os.path.basename(f) for f in files) == ["ok.gif", "raccoon-1.jpg", "raccoon-2.jpg"]
    skipped = dict(re.findall(r"detkit: warning: skipped \S+/(\S+): cannot read image: (.+)", res.err))
    assert "truncated" in skipped.pop("truncated.jpg")
    assert skipped.pop("bomb.png").startswith("Image size (1600000000 pixels) exceeds limit")
    assert skipped == {"empty.jpg": "empty file", "text.png": "not an image file Pillow can decode"}
    assert "4 skipped" in res.err and "Traceback" not in res.err


def test_eval_with_a_truncated_shard_names_the_shard(tiny_run, tmp_path, detkit):
    data = tmp_path / "data"
    shutil.copytree(tiny_run["dataset_dir"], data)
    shard = next(data.glob("test-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    res = detkit("eval", "--checkpoint", tiny_run["run_dir"], "--dataset-dir", data, "--split", "test",
                 "--no-record", "--no-progress")
    assert res.code == 1
    line = res.error_line()
    assert str(shard) in line and "convert it again" in line, line


def test_eval_on_a_dataset_with_other_classes_is_refused(tiny_run, tmp_path, detkit):
    data = tmp_path / "data"
    shutil.copytree(tiny_run["dataset_dir"], data)
    (data / "classes.json").write_text(json.dumps(["cat"]))
    res = detkit("eval", "--checkpoint", tiny_run["run_dir"], "--dataset-dir", data, "--split", "test",
                 "--no-record", "--no-progress")
    assert res.code == 1
    assert "differ from the run's classes" in res.error_line()


def test_predict_output_file_that_cannot_be_written(tiny_run, raccoon_dir, tmp_path, detkit):
    (tmp_path / "blocker").write_text("a file")
    target = tmp_path / "blocker" / "out.jsonl"
    image = os.path.join(raccoon_dir, "images", "raccoon-1.jpg")
    res = detkit("predict", image, "--checkpoint", tiny_run["run_dir"], "-f", target, "--no-progress")
    assert res.code == 1
    assert res.error_line() == (f"{target}: cannot write ({tmp_path / 'blocker'} is a file, not a directory); "
                                "choose another -f/--output-file")
