"""SIGKILL `detkit dataset transform`, `train` and `checkpoint export` at named steps: every output is then
absent, the old one or a complete new one, and running the command again completes with valid output.

The command is stopped at an exact step by a pause point (`DETKIT_PAUSE_AT`, detkit/utils/pause.py), and
each test asserts that the kill really landed there, while the command was still running.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from detkit.config.tiny import tiny_config_yaml

RACCOON_TRAIN = ("data/train_labels.csv", 160, 173)  # images and boxes of the raccoon train split


def _start(args: list, cwd: Path, log: Path, pause_at: str = "") -> subprocess.Popen:
    """`python -m detkit ARGS` in the background, stderr to `log`; it pauses at the named point, if any."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                                     + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("DETKIT_PAUSE_AT", None)
    if pause_at:
        env.update(DETKIT_PAUSE_AT=pause_at, DETKIT_PAUSE_FILE=str(cwd / f"paused-{pause_at}"))
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "detkit", *map(str, args)], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=err, env=env)


def _kill_at_pause(proc: subprocess.Popen, cwd: Path, point: str, log: Path, timeout: float = 300.0) -> None:
    """Wait until `proc` reports it is paused at `point`, check it is still running there, SIGKILL it."""
    marker = cwd / f"paused-{point}"
    deadline = time.time() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"ended (code {proc.returncode}) before reaching {point}:\n{log.read_text()[-2000:]}"
        assert time.time() < deadline, f"never reached {point}:\n{log.read_text()[-2000:]}"
        time.sleep(0.01)
    assert marker.read_text().split() == [str(proc.pid), point]
    assert proc.poll() is None, "the paused command ended before the kill"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-way, not finished


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


def _dataset_state(out: Path) -> tuple[int, int]:
    """(images, shards) of the train split in `out`, which must be whole: every shard, summary, class map."""
    from detkit.datasets.tfrecord import find_shards

    names = sorted(p.name for p in out.iterdir())
    shards = find_shards(str(out), "train")  # an incomplete set raises: never accepted here
    assert names == ["classes.json", *[Path(p).name for p in shards], "train-summary.json"], names
    assert json.loads((out / "classes.json").read_text()) == ["raccoon"]
    count = _records(shards)
    assert json.loads((out / "train-summary.json").read_text())["images"] == count
    return count, len(shards)


@pytest.mark.parametrize("point, survivor", [("transform.records", "old"), ("transform.swap", "old"),
                                             ("transform.swapped", "new")])
def test_kill_transform_then_rerun(raccoon_dir, tmp_path, detkit, point, survivor):
    """Killed while writing records, just before the new dataset is swapped in, and just after."""
    csv, images, boxes = RACCOON_TRAIN
    out = tmp_path / "out"
    args = ["dataset", "transform", "--type", "csv", "--annotations", os.path.join(raccoon_dir, csv),
            "--images-dir", os.path.join(raccoon_dir, "images"), "--output-dir", out, "--split", "train",
            "--num-shards", "4", "--workers", "1", "--overwrite"]
    first = detkit(*args[:-1], "--limit-examples", "10", "--num-shards", "1")  # the old output
    assert first.code == 0, first.err
    old, new = (10, 1), (images, 4)
    assert _dataset_state(out) == old

    proc = _start(args, tmp_path, tmp_path / "kill.log", pause_at=point)
    _kill_at_pause(proc, tmp_path, point, tmp_path / "kill.log")
    assert _dataset_state(out) == (old if survivor == "old" else new)
    if survivor == "old":
        assert glob.glob(str(tmp_path / ".out.transform-*"))  # the killed run's staging is left beside it

    again = detkit(*args)
    assert again.code == 0, again.err
    assert _dataset_state(out) == new
    assert json.loads((out / "train-summary.json").read_text())["boxes"] == boxes
    assert not glob.glob(str(tmp_path / ".out.transform-*"))  # reclaimed by the rerun


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


def _logged_steps(run_dir: Path) -> list[int]:
    """Every step at which losses/total was logged, over all event files: a step logged twice appears twice."""
    import tensorflow as tf

    steps = []
    for path in sorted(glob.glob(str(run_dir / "train" / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            steps += [int(event.step) for value in event.summary.value if value.tag == "losses/total"]
    return sorted(steps)


@pytest.mark.slow
@pytest.mark.parametrize("point, kept", [("train.step-1", 0), ("train.step-2", 2), ("train.step-3", 2)])
def test_kill_train_then_resume_to_the_same_step(tiny_run, tmp_path, detkit, point, kept):
    """Killed before the first checkpoint, right after one, and one step after one."""
    num_steps = 6
    config = tmp_path / "c.yml"
    config.write_text(train_config(tiny_run["dataset_dir"], tmp_path / "jobs", num_steps))
    run_dir = tmp_path / "jobs" / "k"
    proc = _start(["train", "-c", config], tmp_path, tmp_path / "kill.log", pause_at=point)
    _kill_at_pause(proc, tmp_path, point, tmp_path / "kill.log")
    assert _check_run(run_dir) == kept

    again = detkit("train", "-c", config)
    assert again.code == 0, again.err
    assert f"finished at step {num_steps}" in again.err
    if kept:
        assert f"resuming {run_dir} from step {kept} " in again.err
    assert _check_run(run_dir) == num_steps
    # The loss curve has every step exactly once: the killed run's up to its checkpoint, then the resumed run's.
    assert _logged_steps(run_dir) == list(range(1, num_steps + 1))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_within_20_s_and_the_same_command_resumes(tiny_run, tmp_path, detkit):
    """How schedulers preempt: SIGTERM, then SIGKILL after a grace period."""
    config = tmp_path / "c.yml"
    config.write_text(train_config(tiny_run["dataset_dir"], tmp_path / "jobs", 50))
    no_periodic = ["-o", "train.checkpoint_every_steps=100"]
    run_dir = tmp_path / "jobs" / "k"
    log = tmp_path / "term.log"
    proc = _start(["train", "-c", config, *no_periodic], tmp_path, log, pause_at="train.step-3")
    marker = tmp_path / "paused-train.step-3"
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.01)
    assert not (run_dir / "checkpoints").exists()  # nothing saved before the signal
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    assert time.time() - start < 20
    assert code == 143, log.read_text()[-2000:]
    assert (f"stopped by SIGTERM at step 3; checkpoint saved to {run_dir / 'checkpoints' / 'ckpt-3'}; "
            "run the same command to resume") in log.read_text()
    assert _check_run(run_dir) == 3
    assert not (run_dir / "train.lock").exists()

    again = detkit("train", "-c", config, *no_periodic, "-o", "train.num_steps=5")
    assert again.code == 0, again.err
    assert f"resuming {run_dir} from step 3 " in again.err and "finished at step 5" in again.err
    assert _logged_steps(run_dir) == [1, 2, 3, 4, 5]


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
def test_kill_export_then_rerun(tiny_run, tmp_path, detkit):
    """Killed with the new SavedModel written beside the old one, just before the swap."""
    out = tmp_path / "exported"
    args = ["checkpoint", "export", tiny_run["run_dir"], "--output", out, "--overwrite"]
    first = detkit(*args, "--min-prob", "0.9")  # the old export
    assert first.code == 0, first.err

    proc = _start([*args, "--min-prob", "0.1"], tmp_path, tmp_path / "kill.log", pause_at="export.swap")
    _kill_at_pause(proc, tmp_path, "export.swap", tmp_path / "kill.log")
    assert glob.glob(str(tmp_path / ".export-*"))  # the new one was staged ...
    _check_export(out, {0.9})  # ... and the old one is whole

    again = detkit(*args, "--min-prob", "0.1")
    assert again.code == 0, again.err
    _check_export(out, {0.1})
    assert not glob.glob(str(tmp_path / ".export-*"))  # a killed run's staging is reclaimed
