"""SIGKILL `detkit dataset transform`, `train` and `checkpoint export` at random points (three seeds each):
every output file is then absent, the old one or a complete new one, and running the command again completes
with valid output. The kill lands after the command has started writing (its staging directory or run directory
exists) plus a random delay, so it falls in the writing, not in Python's start-up.
"""
from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from detkit.config.tiny import tiny_config_yaml

RACCOON_TRAIN = ("data/train_labels.csv", 160, 173)  # images and boxes of the raccoon train split
SEEDS = [0, 1, 2]


def _start(args: list, cwd: Path, log: Path) -> subprocess.Popen:
    """`python -m detkit ARGS` in the background, stderr to `log`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                                     + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "detkit", *map(str, args)], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)


def _kill_after(proc: subprocess.Popen, started, delay: float, timeout: float = 180.0) -> bool:
    """SIGKILL `proc` `delay` s after `started()` is first true; False if it finished before that."""
    deadline = time.time() + timeout
    while proc.poll() is None and not started() and time.time() < deadline:
        time.sleep(0.005)
    end = time.time() + delay
    while proc.poll() is None and time.time() < end:
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return killed


# ---------------------------------------------------------------- dataset transform
def _records(paths: list[str]) -> int:
    """How many records the shards hold, parsing every one (a broken file raises)."""
    import tensorflow as tf

    from detkit.datasets.tfrecord import parse_example

    n = 0
    for record in tf.data.TFRecordDataset(paths).map(parse_example):
        assert record["image"].shape == () and record["boxes"].shape[-1] == 4
        n += 1
    return n


def _check_dataset(out: Path, allowed_counts: set) -> None:
    """Every visible file in `out` is whole; a split that looks complete has the old or the new content."""
    from detkit.datasets.tfrecord import find_shards
    from detkit.errors import DatasetError

    if not out.exists():
        return
    for path in out.iterdir():
        if path.name.startswith("."):
            continue  # a killed run's staging directory: never read, removed by the next run
        if path.suffix == ".tfrecord":
            assert _records([str(path)]) >= 1, path
        else:
            json.loads(path.read_text())
    if not (out / "classes.json").exists():
        return
    try:
        shards = find_shards(str(out), "train")
    except DatasetError:
        return  # an incomplete shard set is refused by every reader, with a one-line error
    count = _records(shards)
    assert count in allowed_counts, count
    summary = out / "train-summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["images"] == count


@pytest.mark.parametrize("seed, after, longest", [(0, "staging", 2.0), (1, "publishing", 0.05),
                                                  (2, "publishing", 0.3)])
def test_kill_transform_then_rerun(raccoon_dir, tmp_path, detkit, seed, after, longest):
    """Killed while staging (reading and writing records), or while publishing (renaming shards into place)."""
    csv, images, boxes = RACCOON_TRAIN
    out = tmp_path / "out"
    args = ["dataset", "transform", "--type", "csv", "--annotations", os.path.join(raccoon_dir, csv),
            "--images-dir", os.path.join(raccoon_dir, "images"), "--output-dir", out, "--split", "train",
            "--num-shards", "4", "--workers", "1", "--overwrite"]
    first = detkit(*args[:-1], "--limit-examples", "10", "--num-shards", "1")  # the old output
    assert first.code == 0, first.err

    proc = _start(args, tmp_path, tmp_path / "kill.log")
    markers = {"staging": lambda: any(p.name.startswith(".transform-") for p in out.iterdir()),
               "publishing": lambda: any(p.name.endswith("-of-00004.tfrecord") for p in out.iterdir())}
    killed = _kill_after(proc, markers[after], random.Random(seed).uniform(0.0, longest))
    assert killed or proc.returncode == 0, (tmp_path / "kill.log").read_text()[-2000:]
    _check_dataset(out, {10, images})

    again = detkit(*args)
    assert again.code == 0, again.err
    _check_dataset(out, {images})
    assert json.loads((out / "train-summary.json").read_text())["boxes"] == boxes
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.json", *[f"train-0000{i}-of-00004.tfrecord" for i in range(4)], "train-summary.json"]


# ---------------------------------------------------------------- train
def train_config(dataset_dir, job_dir, num_steps: int) -> str:
    """The tiny model on 96-128 px images, batch 1, a checkpoint every 2 steps."""
    return tiny_config_yaml(dataset_dir, job_dir, dataset={"image": {"min_size": 96, "max_size": 128}},
                            train={"run_name": "k", "batch_size": 1, "num_steps": num_steps,
                                   "checkpoint_every_steps": 2, "log_every_steps": 1})


def _check_run(run_dir: Path) -> int:
    """Config, class map and every complete checkpoint of a run read back whole; the newest step (0 if none)."""
    import tensorflow as tf

    from detkit.runs import latest_checkpoint, step_of

    if not run_dir.exists():
        return 0
    for name, load in (("config.yml", yaml.safe_load), ("classes.json", json.loads)):
        if (run_dir / name).exists():
            assert load((run_dir / name).read_text()) is not None, name
    for index in glob.glob(str(run_dir / "checkpoints" / "ckpt-*.index")):
        prefix = index[: -len(".index")]
        if glob.glob(prefix + ".data-*"):
            reader = tf.train.load_checkpoint(prefix)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)  # every tensor reads back: nothing half-written
    latest = latest_checkpoint(str(run_dir))
    return step_of(latest) if latest else 0


@pytest.mark.slow
@pytest.mark.parametrize("seed, after, longest", [(0, "config.yml", 8.0), (1, "checkpoints", 1.5),
                                                  (2, "checkpoints", 1.5)])
def test_kill_train_then_resume_to_the_same_step(tiny_run, tmp_path, detkit, seed, after, longest):
    """Killed after the run directory is made (before any checkpoint, often) or after the first checkpoint."""
    import tensorflow as tf

    num_steps = 8
    config = tmp_path / "c.yml"
    config.write_text(train_config(tiny_run["dataset_dir"], tmp_path / "jobs", num_steps))
    run_dir = tmp_path / "jobs" / "k"
    proc = _start(["train", "-c", config], tmp_path, tmp_path / "kill.log")
    killed = _kill_after(proc, lambda: (run_dir / after).exists(), random.Random(seed).uniform(0.0, longest))
    assert killed or proc.returncode == 0, (tmp_path / "kill.log").read_text()[-2000:]
    kept = _check_run(run_dir)

    again = detkit("train", "-c", config)
    assert again.code == 0, again.err
    assert f"finished at step {num_steps}" in again.err
    if kept:
        assert f"resuming {run_dir} from step {kept} " in again.err
    assert _check_run(run_dir) == num_steps
    # The loss curve has every step once more: the first run's, then the resumed run's from kept + 1 on.
    steps: dict[int, float] = {}
    for path in sorted(glob.glob(str(run_dir / "train" / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "losses/total":
                    steps[int(event.step)] = float(tf.make_ndarray(value.tensor))
    assert sorted(steps) == list(range(1, num_steps + 1))


# ---------------------------------------------------------------- checkpoint export
def _check_export(out: Path, allowed_min_probs: set) -> None:
    """An export directory is absent or a complete SavedModel (the old or the new one) that detects."""
    import tensorflow as tf

    if not out.exists():
        return
    manifest = json.loads((out / "assets" / "export.json").read_text())
    assert manifest["min_prob"] in allowed_min_probs
    model = tf.saved_model.load(str(out))
    image = tf.io.encode_jpeg(tf.zeros([40, 60, 3], tf.uint8))
    result = model.signatures["serving_default"](image_bytes=image)
    assert result["image_size"].numpy().tolist() == [40, 60]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_kill_export_then_rerun(tiny_run, tmp_path, detkit, seed):
    out = tmp_path / "exported"
    args = ["checkpoint", "export", tiny_run["run_dir"], "--output", out, "--overwrite"]
    first = detkit(*args, "--min-prob", "0.9")  # the old export
    assert first.code == 0, first.err

    proc = _start([*args, "--min-prob", "0.1"], tmp_path, tmp_path / "kill.log")
    staged = lambda: bool(glob.glob(str(tmp_path / ".export-*")))  # noqa: E731
    killed = _kill_after(proc, staged, random.Random(seed).uniform(0.0, 6.0))
    assert killed or proc.returncode == 0, (tmp_path / "kill.log").read_text()[-2000:]
    _check_export(out, {0.9, 0.1})

    again = detkit(*args, "--min-prob", "0.1")
    assert again.code == 0, again.err
    _check_export(out, {0.1})
    assert not glob.glob(str(tmp_path / ".export-*"))  # a killed run's staging is reclaimed
