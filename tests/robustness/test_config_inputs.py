"""Config files and values through `detkit config show` and `detkit train`: each bad input is exit code 2 (config)
or 1 (dataset) with one line naming the file, line or key. (Unknown keys and typos, `abc` for an int, invalid
YAML, negative learning rate, min_size > max_size, anchor ratio 0, missing or empty dataset dirs and splits are
covered in tests/config and tests/train.)
"""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """A two-image `detkit dataset transform` output with classes ["cat", "dog"] and split "s"."""
    from click.testing import CliRunner

    from detkit.cli.main import cli

    from robust_helpers import dataset_helpers as h

    root = tmp_path_factory.mktemp("cfg_data")
    h.make_image(root / "im" / "a.jpg")
    h.make_image(root / "im" / "b.jpg")
    ann = h.write_csv(root / "l.csv", [("a.jpg", 64, 48, "cat", 1, 1, 30, 30), ("b.jpg", 64, 48, "dog", 5, 5, 40, 40)])
    out = root / "data"
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(ann),
                                      "--images-dir", str(root / "im"), "--split", "s", "--output-dir", str(out)],
                                standalone_mode=False)
    assert result.exception is None, result.output
    return str(out)


@pytest.mark.parametrize("text, message", [
    ("train:\n  batch_size: [2]\n", "config key train.batch_size: expected int, got [2]"),
    ("train:\n  batch_size: true\n", "config key train.batch_size: expected int, got True"),
    ("train:\n  num_steps: 1.5\n", "config key train.num_steps: expected int, got 1.5"),
    ("model: 3\n", "config key model: expected a mapping (section), got 3"),
    ("model:\n  anchors:\n    ratios: 0.5\n", "config key model.anchors.ratios: expected list"),
    ("dataset:\n  image:\n    min_size: big\n", "config key dataset.image.min_size: expected int, got 'big'"),
    ("predict:\n  min_prob: high\n", "config key predict.min_prob: expected float, got 'high'"),
    ("train:\n  batch_sise: 2\n", "unknown config key train.batch_sise — did you mean train.batch_size?"),
    ("train:\n  batch_size: 0\n", "config key train.batch_size: must be > 0, got 0"),
    ("train:\n  num_steps: -1\n", "config key train.num_steps: must be >= 0, got -1"),
    ("train:\n  keep_checkpoints: 0\n", "config key train.keep_checkpoints: must be > 0, got 0"),
    ("dataset:\n  augment:\n    scale_range: [2.0, 1.0]\n", "config key dataset.augment.scale_range: expected [low, high]"),
    ("model:\n  postprocess:\n    nms_iou: 1.5\n", "config key model.postprocess.nms_iou: must be within [0, 1], got 1.5"),
    ("model:\n  anchors:\n    sizes: []\n", "config key model.anchors.sizes: needs at least one size"),
    ("model:\n  anchors:\n    sizes: [-32]\n", "config key model.anchors.sizes[0]: must be > 0, got -32.0"),
    ("dataset:\n  extra_sources: [/data/voc]\n",
     "config key dataset.extra_sources[0]: expected \"DIR:SPLIT\", got '/data/voc'"),
])
def test_bad_config_file_values_name_the_key(tmp_path, detkit, text, message):
    path = tmp_path / "c.yml"
    path.write_text(text, encoding="utf-8")
    res = detkit("config", "show", "-c", path)
    assert res.code == 2
    assert res.error_line().startswith(message)


@pytest.mark.parametrize("content, message", [
    (b"train:\n\tbatch_size: 2\n", " line 2: found character '\\t' that cannot start any token"),
    (b"train: {batch_size: 2\n", " line 2: expected ',' or '}', but got '<stream end>'"),
    (b"train:\n  run_name: 'abc\n", " line 3: found unexpected end of stream"),
    (b"train:\n  batch_size: 2\n  batch_size: 3\n", " line 3: duplicate key batch_size (remove one)"),
    (b"train:\n  run_name: caf\xe9\n", " line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    (b"- train\n- model\n", ": expected a mapping of sections, got list"),
])
def test_broken_config_file_names_file_and_line(tmp_path, detkit, content, message):
    path = tmp_path / "c.yml"
    path.write_bytes(content)
    res = detkit("config", "show", "-c", path)
    assert res.code == 2
    assert res.error_line() == f"config file {path}{message}"


def test_config_path_that_is_a_directory(tmp_path, detkit):
    res = detkit("config", "show", "-c", tmp_path)  # click's own usage error, before detkit reads it
    assert res.code == 2 and "Traceback" not in res.err
    assert f"Invalid value for '-c' / '--config': File '{tmp_path}' is a directory." in res.err


def test_empty_config_file_means_the_defaults(tmp_path, detkit):
    (tmp_path / "c.yml").write_text("# nothing set\n")
    assert detkit("config", "show", "-c", tmp_path / "c.yml").code == 0


@pytest.mark.parametrize("override, message", [
    ("train.batch_size", "override 'train.batch_size': expected key.path=value"),
    ("=3", "override '=3': empty key"),
    ("train.batch_size.x=3", "config key train.batch_size: expected int, got {'x': 3}"),
])
def test_bad_overrides(detkit, override, message):
    res = detkit("config", "show", "-o", override)
    assert res.code == 2 and res.error_line() == message


# ---------------------------------------------------------------- the dataset a config points at
def _train(detkit, tmp_path, dataset_dir, *extra):
    return detkit("train", "-o", f"dataset.dir={dataset_dir}", "-o", "model.base_network.weights=none", "-o", "dataset.split=s",
                  "-o", f"train.job_dir={tmp_path / 'jobs'}", "-o", "train.num_steps=1", *extra)


@pytest.mark.parametrize("damage, message", [
    ("classes_not_json", "classes.json line 1, column 1: invalid JSON (Expecting value)"),
    ("classes_not_list", "classes.json: expected a JSON list of non-empty class names"),
    ("classes_empty", "classes.json lists no classes"),
    ("classes_duplicate", "classes.json: duplicate class names"),
    ("shard_missing", "split 's'"),
    ("dir_is_file", "not a `detkit dataset transform` output directory"),
])
def test_dataset_dir_that_is_not_a_good_transform_output(tmp_path, detkit, dataset, damage, message):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    classes = data / "classes.json"
    if damage == "classes_not_json":
        classes.write_text("")
    elif damage == "classes_not_list":
        classes.write_text('{"cat": 1}')
    elif damage == "classes_empty":
        classes.write_text("[]")
    elif damage == "classes_duplicate":
        classes.write_text('["cat", "cat"]')
    elif damage == "shard_missing":
        for shard in data.glob("s-*.tfrecord"):
            shard.unlink()
    elif damage == "dir_is_file":
        shutil.rmtree(data)
        data.write_text("not a directory")
    res = _train(detkit, tmp_path, data)
    assert res.code != 0
    line = res.error_line()
    assert message in line and str(data) in line
    assert not (tmp_path / "jobs").exists()  # refused before the run directory was made


def test_extra_source_with_other_classes_is_refused(tmp_path, detkit, dataset):
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    (other / "classes.json").write_text(json.dumps(["cat", "raccoon"]))  # label 2 would mean raccoon, not dog
    res = _train(detkit, tmp_path, dataset, "-o", f"dataset.extra_sources=['{other}:s']")
    assert res.code != 0
    assert res.error_line() == (
        f"config key dataset.extra_sources[0]: {other}/classes.json lists ['cat', 'raccoon'], but dataset.dir "
        f"{dataset} lists ['cat', 'dog']; labels would be mixed up (re-run `detkit dataset transform` or "
        "`detkit dataset merge` so both share one class map)")
    assert not (tmp_path / "jobs").exists()


def test_extra_source_split_missing_is_refused(tmp_path, detkit, dataset):
    res = _train(detkit, tmp_path, dataset, "-o", f"dataset.extra_sources=['{dataset}:nope']")
    assert res.code != 0
    line = res.error_line()
    assert line.startswith("config key dataset.extra_sources[0]: ") and "'nope'" in line


def test_verbose_adds_the_traceback_and_the_same_last_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "c.yml"
    path.write_text("train:\n  batch_size: -3\n")
    quiet = subprocess.run([sys.executable, "-m", "detkit", "config", "show", "-c", str(path)],
                           capture_output=True, text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-m", "detkit", "--verbose", "config", "show", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)
    line = "detkit: error: config key train.batch_size: must be > 0, got -3"
    assert (quiet.returncode, quiet.stderr) == (2, line + "\n")
    assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.rstrip("\n").splitlines()[-1] == line
