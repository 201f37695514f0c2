"""`detkit train` when the disk, the job directory, the dataset or the run's checkpoints let it down: exit code
!= 0, one line naming the path and the fix, and the run directory left resumable. (Resuming with a changed
architecture or unreadable saved config, NaN losses, and missing datasets and splits are covered in tests/train.)
"""
from __future__ import annotations

import errno
import os
import shutil
import time

import numpy as np
import pytest

from detkit.config.tiny import tiny_config_yaml

from robust_helpers import dataset_helpers as h


def config_yaml(dataset_dir, job_dir) -> str:
    """The tiny model on 64-96 px images, batch 1, 2 steps, a checkpoint every step."""
    return tiny_config_yaml(dataset_dir, job_dir, dataset={"split": "s", "image": {"min_size": 64, "max_size": 96},
                                                           "shuffle_buffer": 0},
                            train={"run_name": "r", "batch_size": 1, "num_steps": 2, "checkpoint_every_steps": 1})


def _transform(root, rows) -> str:
    from click.testing import CliRunner

    from detkit.cli.main import cli

    for row in rows:
        if not (root / "im" / row[0]).exists():
            h.make_image(root / "im" / row[0], size=(96, 64))
    ann = h.write_csv(root / "l.csv", rows)
    out = root / "data"
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(ann),
                                      "--images-dir", str(root / "im"), "--split", "s", "--output-dir", str(out)],
                                standalone_mode=False)
    assert result.exception is None, result.output
    return str(out)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """Two 96x64 images with one box each."""
    return _transform(tmp_path_factory.mktemp("train_fail"), [("a.jpg", 96, 64, "cat", 10, 10, 60, 50),
                                                              ("b.jpg", 96, 64, "cat", 30, 5, 90, 60)])


def _config(tmp_path, dataset_dir, job_dir=None) -> str:
    path = tmp_path / "c.yml"
    path.write_text(config_yaml(dataset_dir, job_dir or tmp_path / "jobs"), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory) -> str:
    """A finished 2-step run (checkpoints ckpt-1, ckpt-2); copy it before changing it."""
    from detkit.config import load_config
    from detkit.train.trainer import train

    root = tmp_path_factory.mktemp("finished")
    return train(load_config([_config(root, dataset)])).run_dir


def test_dataset_with_zero_boxes_is_refused(tmp_path, detkit):
    # Every box is degenerate, so every image became a negative: a detector would learn only "background".
    data = _transform(tmp_path, [("a.jpg", 96, 64, "cat", 5, 5, 5, 5), ("b.jpg", 96, 64, "cat", 9, 9, 9, 20)])
    res = detkit("train", "-c", _config(tmp_path, data))
    assert res.code == 1
    assert res.error_line() == (
        f"{data}: split 's' has no boxes (every image is a negative): there is nothing to learn; check the "
        "annotations, or the summary's dropped_box_details and skipped lists")
    assert not (tmp_path / "jobs").exists()


def test_truncated_shard_is_named(tmp_path, detkit, dataset):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    shard = next(data.glob("s-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size - 100])  # the second record loses its end
    res = detkit("train", "-c", _config(tmp_path, data))
    assert res.code == 1
    line = res.error_line()
    assert line.startswith(f"{shard}: corrupt TFRecord file (") and line.endswith(
        "convert it again with `detkit dataset transform ... --overwrite`"), line


def test_job_dir_under_a_regular_file(tmp_path, detkit, dataset):
    # Works as root too, unlike file modes: nothing can be created below a regular file.
    (tmp_path / "blocker").write_text("a file where the job directory should go")
    job_dir = tmp_path / "blocker" / "jobs"
    res = detkit("train", "-c", _config(tmp_path, dataset, job_dir))
    assert res.code == 1
    assert res.error_line() == (f"{job_dir / 'r'}: cannot write the run directory ({tmp_path / 'blocker'} is a "
                                "file, not a directory); "
                                "set train.job_dir to a writable directory")


def test_read_only_job_dir(tmp_path, detkit, dataset, monkeypatch):
    job_dir = tmp_path / "jobs"
    job_dir.mkdir()
    job_dir.chmod(0o555)
    # Root writes through file modes: make the kernel's answer for a read-only directory explicit, for
    # every way of creating something below it, so the test means the same for every user.
    inside = str(job_dir) + os.sep

    def refuse(real):
        def call(path, *args, **kwargs):
            if os.fspath(path).startswith(inside):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path, *args, **kwargs)
        return call

    for name in ("mkdir", "open", "makedirs"):
        monkeypatch.setattr(os, name, refuse(getattr(os, name)))
    try:
        res = detkit("train", "-c", _config(tmp_path, dataset, job_dir))
    finally:
        monkeypatch.undo()
        job_dir.chmod(0o755)
    assert res.code == 1
    assert res.error_line() == (f"{job_dir / 'r'}: cannot write the run directory (Permission denied); "
                                "set train.job_dir to a writable directory")
    assert list(job_dir.iterdir()) == []


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_before_training(tmp_path, detkit, dataset, monkeypatch):
    from detkit.utils import atomic

    monkeypatch.setattr(atomic, "write_text", _no_space)
    res = detkit("train", "-c", _config(tmp_path, dataset))
    assert res.code == 1
    assert res.error_line() == (f"{tmp_path / 'jobs' / 'r'}: cannot write the run directory (No space left on "
                                "device); free some space or set train.job_dir to another disk")


def test_disk_full_at_a_checkpoint_keeps_the_last_good_one(tmp_path, detkit, dataset, monkeypatch):
    import tensorflow as tf

    real = tf.train.CheckpointManager.save
    calls = []

    def full_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            # What a full disk leaves: part of ckpt-2's data written, its index never.
            directory = self.directory
            with open(os.path.join(directory, "ckpt-2.data-00000-of-00001"), "wb") as fh:
                fh.write(b"\0" * 1000)
            os.makedirs(os.path.join(directory, "ckpt-2_temp"), exist_ok=True)
            with open(os.path.join(directory, "ckpt-2_temp", "part-00000"), "wb") as fh:
                fh.write(b"\1" * 1000)
            raise tf.errors.ResourceExhaustedError(None, None, "ckpt-2_temp/part-00000: No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_on_second)
    res = detkit("train", "-c", _config(tmp_path, dataset))
    run_dir = tmp_path / "jobs" / "r"
    assert res.code == 1
    assert res.error_line() == (f"{run_dir}: cannot write checkpoint (ckpt-2_temp/part-00000: No space left on "
                                "device); free some space, then run the same command to resume from the last one")
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")) == str(run_dir / "checkpoints" / "ckpt-1")
    assert (run_dir / "checkpoints" / "ckpt-2.data-00000-of-00001").stat().st_size == 1000  # the fake wrote it
    from detkit.runs import latest_checkpoint

    assert latest_checkpoint(str(run_dir)) == str(run_dir / "checkpoints" / "ckpt-1")  # the partial one is ignored
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real)
    again = detkit("train", "-c", _config(tmp_path, dataset))
    assert again.code == 0, again.err
    assert f"resuming {run_dir} from step 1" in again.err and "finished at step 2" in again.err
    assert latest_checkpoint(str(run_dir)) == str(run_dir / "checkpoints" / "ckpt-2")
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / "ckpt-2"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2  # the real save replaced the debris


@pytest.mark.parametrize("damage", ["truncated_data", "garbage_index"])
def test_damaged_checkpoint_on_resume_is_one_line_naming_the_fix(tmp_path, detkit, dataset, finished_run, damage):
    run_dir = tmp_path / "jobs" / "r"
    shutil.copytree(finished_run, run_dir)
    prefix = run_dir / "checkpoints" / "ckpt-2"
    if damage == "truncated_data":
        data = next(prefix.parent.glob("ckpt-2.data-*"))
        data.write_bytes(data.read_bytes()[:1000])
    else:
        (prefix.parent / "ckpt-2.index").write_bytes(os.urandom(300))
    res = detkit("train", "-c", _config(tmp_path, dataset), "-o", "train.num_steps=3")
    assert res.code == 1
    line = res.error_line()
    assert line.startswith(f"{prefix}: cannot resume, the checkpoint is damaged ("), line
    assert line.endswith(f"delete it with `detkit checkpoint delete {prefix} --yes` to resume from the one before")
    assert detkit("checkpoint", "delete", prefix, "--yes").code == 0
    again = detkit("train", "-c", _config(tmp_path, dataset), "-o", "train.num_steps=3")
    assert again.code == 0, again.err
    assert f"resuming {run_dir} from step 1" in again.err and "finished at step 3" in again.err


@pytest.mark.parametrize("damage", ["missing_data", "garbage_state", "no_state"])
def test_lost_state_or_data_resumes_from_the_newest_complete_checkpoint(tmp_path, detkit, dataset, finished_run,
                                                                        damage):
    # Before, a damaged state file made `train` start again from step 0 beside the run's checkpoints.
    run_dir = tmp_path / "jobs" / "r"
    shutil.copytree(finished_run, run_dir)
    ckpt = run_dir / "checkpoints"
    if damage == "missing_data":
        next(ckpt.glob("ckpt-2.data-*")).unlink()
    elif damage == "garbage_state":
        (ckpt / "checkpoint").write_text("this is { not a checkpoint state\n")
    else:
        (ckpt / "checkpoint").unlink()
    res = detkit("train", "-c", _config(tmp_path, dataset), "-o", "train.num_steps=3")
    assert res.code == 0, res.err
    resumed = "ckpt-1" if damage == "missing_data" else "ckpt-2"
    assert f"from step {resumed[-1]} ({ckpt / resumed})" in res.err
    assert "finished at step 3" in res.err


# ---------------------------------------------------------------- one training per run directory
def test_second_train_on_a_running_run_is_refused_naming_pid_and_host(tmp_path, detkit, dataset):
    import json
    import socket
    import subprocess
    import sys

    run_dir = tmp_path / "jobs" / "r"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_dir / "train.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                        "started": "2026-01-01T00:00:00"}))
        res = detkit("train", "-c", _config(tmp_path, dataset))
        assert res.code == 1
        assert res.error_line() == (f"{run_dir}: already being trained by pid {holder.pid} on host "
                                    f"{socket.gethostname()} (since 2026-01-01T00:00:00); wait for it, stop it, "
                                    "or use another train.run_name")
        assert not (run_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (a crash, a kill -9): its lock is stale, and taken over.
    again = detkit("train", "-c", _config(tmp_path, dataset))
    assert again.code == 0, again.err
    assert f"taking over {run_dir / 'train.lock'}: pid {holder.pid} on this host is no longer running" in again.err
    assert "finished at step 2" in again.err
    assert not (run_dir / "train.lock").exists()  # released at the end


def test_lock_of_another_host_is_refused_with_the_way_out(tmp_path, detkit, dataset):
    import json

    run_dir = tmp_path / "jobs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "train.lock").write_text(json.dumps({"pid": 4242, "host": "node-7", "started": "t"}))
    res = detkit("train", "-c", _config(tmp_path, dataset))
    assert res.code == 1
    line = res.error_line()
    assert "already being trained by pid 4242 on host node-7" in line
    assert line.endswith(f"if that process is gone, delete {run_dir / 'train.lock'}")


# ---------------------------------------------------------------- the NaN guard checks the weights
def test_non_finite_weights_are_never_checkpointed(tmp_path, dataset, monkeypatch):
    """Step 2's update makes a weight NaN while its loss (computed before the update) is finite."""
    import tensorflow as tf

    from detkit.config import load_config
    from detkit.train import trainer

    real = trainer.make_replica_step

    def poisoning(model, optimizer, replicas, loss_scaling):
        step = real(model, optimizer, replicas, loss_scaling)

        def poisoned(batch):
            losses = step(batch)
            var = model.trainable_variables[0]
            var.assign(tf.where(optimizer.iterations >= 2, tf.fill(tf.shape(var), float("nan")), var))
            return losses

        return poisoned

    monkeypatch.setattr(trainer, "make_replica_step", poisoning)
    cfg = load_config([_config(tmp_path, dataset)], ["train.num_steps=3"])
    with pytest.raises(trainer.NonFiniteLossError) as info:
        trainer.train(cfg)
    ckpt_dir = tmp_path / "jobs" / "r" / "checkpoints"
    assert f"Last finite checkpoint: {ckpt_dir / 'ckpt-1'}" in str(info.value), str(info.value)
    assert "weights became non-finite by step 2" in str(info.value)
    assert sorted(p.name for p in ckpt_dir.glob("ckpt-*.index")) == ["ckpt-1.index"]
    reader = tf.train.load_checkpoint(str(ckpt_dir / "ckpt-1"))
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
            assert np.isfinite(value).all(), key


# ---------------------------------------------------------------- "run the same command again to resume"
def test_default_run_name_resumes_the_newest_unfinished_run_of_the_same_config(tmp_path, detkit, dataset):
    import signal
    import subprocess
    import sys

    config = _config(tmp_path, dataset)
    text = open(config).read().replace("  run_name: r\n", "")
    open(config, "w").write(text)
    # The first `detkit train -c config` is killed after its first checkpoint (of 2), at a pause point.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    marker = tmp_path / "paused"
    env = dict(os.environ, PYTHONPATH=repo, DETKIT_PAUSE_AT="train.step-1", DETKIT_PAUSE_FILE=str(marker))
    log = tmp_path / "first.log"
    with open(log, "w") as err:
        first = subprocess.Popen([sys.executable, "-m", "detkit", "train", "-c", config], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while not marker.exists():
        assert first.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL
    runs = sorted((tmp_path / "jobs").iterdir())
    assert len(runs) == 1
    res = detkit("train", "-c", config)
    assert res.code == 0, res.err
    assert (f"resuming {runs[0]}: the newest unfinished run of this config (train.run_name is empty; "
            "set it to start another run)") in res.err
    assert f"resuming {runs[0]} from step 1" in res.err and "finished at step 2" in res.err
    assert sorted((tmp_path / "jobs").iterdir()) == runs
    # Finished: the same command now starts a new run; a changed config never picks up the old one.
    time.sleep(1.1)  # generated names have a one-second resolution
    fresh = detkit("train", "-c", config, "-o", "train.num_steps=1")
    assert fresh.code == 0 and "resuming" not in fresh.err, fresh.err
    assert len(list((tmp_path / "jobs").iterdir())) == 2
