"""The training loop on a 3-image synthetic dataset with a tiny model: run directory contents, TensorBoard
scalars, resuming (in-process and after `kill -9`), refusing an incompatible resume, the NaN guard, and
config errors through `detkit train`.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detkit.config.tiny import tiny_config_yaml

SPLIT = "synth"
# 200x100 and 120x80 PNGs: black with white (blue) rectangles; empty.png is a negative (no boxes).
IMAGES = {
    "wide.png": (200, 100, [("box", (40, 20, 80, 60))]),
    "two.png": (200, 100, [("box", (20, 10, 50, 40)), ("disc", (130, 50, 180, 90))]),
    "empty.png": (120, 80, []),
}

# The tiny model (detkit/config/tiny.py) on 96-160 px images; batch 1, no shuffling, so the
# images come in CSV order: wide, two, empty, wide, ... (step 3 is the negative image).
def tiny_yaml(dataset_dir, job_dir) -> str:
    """The tiny model (detkit/config/tiny.py) on the synthetic split: batch 1, 4 steps, warm-up 2."""
    return tiny_config_yaml(dataset_dir, job_dir,
                            dataset={"split": "synth", "image": {"min_size": 96, "max_size": 160}, "shuffle_buffer": 0},
                            train={"batch_size": 1, "num_steps": 4, "checkpoint_every_steps": 100,
                                   "log_every_steps": 2, "learning_rate": {"warmup_steps": 2}})

LOSS_TAGS = {"losses/total", "losses/rpn_class", "losses/rpn_box", "losses/rcnn_class", "losses/rcnn_box", "losses/l2"}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    """`detkit dataset transform --type csv` of three drawn PNGs."""
    from click.testing import CliRunner

    from detkit.cli.main import cli

    root = tmp_path_factory.mktemp("train_data")
    (root / "images").mkdir()
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for name, (w, h, objects) in IMAGES.items():
        a = np.zeros((h, w, 3), np.uint8)
        for _, (x0, y0, x1, y1) in objects:
            a[y0:y1, x0:x1] = 255
        Image.fromarray(a, "RGB").save(root / "images" / name, format="PNG")
        rows += [f"{name},{w},{h},{c},{b[0]},{b[1]},{b[2]},{b[3]}" for c, b in objects] or [f"{name},{w},{h},,,,,"]
    (root / "synth.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = root / "dataset"
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(root / "synth.csv"),
                                      "--images-dir", str(root / "images"), "--output-dir", str(out),
                                      "--split", SPLIT], standalone_mode=False)
    assert result.exception is None, (result.exception, result.output)
    return str(out)


def write_config(directory: Path, dataset_dir: str, name: str = "cfg.yml") -> str:
    """The tiny config with its job_dir under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(tiny_yaml(dataset_dir, directory / "jobs"), encoding="utf-8")
    return str(path)


def read_scalars(run_dir: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every event file in RUN/train; a step logged twice (in any file) fails."""
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                steps = out.setdefault(value.tag, {})
                assert int(event.step) not in steps, f"{value.tag} logged twice at step {event.step} ({path})"
                steps[int(event.step)] = number
    return out


def test_scalar_reader_refuses_a_step_logged_twice(tmp_path):
    import tensorflow as tf

    for run in range(2):  # two runs of one directory, the second repeating step 2
        writer = tf.summary.create_file_writer(str(tmp_path / "train"), filename_suffix=f".{run}")
        with writer.as_default():
            for step in ((1, 2) if run == 0 else (2, 3)):
                tf.summary.scalar("losses/total", float(step), step=step)
        writer.close()
    with pytest.raises(AssertionError, match="logged twice at step 2"):
        read_scalars(str(tmp_path))


def test_resume_drops_the_steps_logged_after_the_checkpoint(tmp_path):
    """A killed run logged steps 1-5 but checkpointed at 3: the resumed run will log 4 and 5 again."""
    import tensorflow as tf

    from detkit.train.summaries import drop_steps_after

    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        for step in range(1, 6):
            tf.summary.scalar("losses/total", float(step), step=step)
    writer.close()
    assert len(drop_steps_after(str(tmp_path / "train"), 3)) == 1
    assert read_scalars(str(tmp_path)) == {"losses/total": {1: 1.0, 2: 2.0, 3: 3.0}}
    assert drop_steps_after(str(tmp_path / "train"), 3) == []  # nothing left to drop: untouched


def the_error_line(stderr: str) -> str:
    """The single `detkit: error:` line of a failed command (and no traceback anywhere)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in re.split(r"[\r\n]+", stderr) if line.startswith("detkit: error:")]
    assert len(lines) == 1, stderr
    assert lines[0] == stderr.rstrip("\n").split("\n")[-1]  # the error is the last thing printed
    return lines[0]


@pytest.fixture(scope="module")
def short_run(dataset_dir, tmp_path_factory):
    """A 4-step run; returns (TrainResult, config path, stderr, on_checkpoint calls).

    Each on_checkpoint call is (path, step, the TensorBoard scalars on disk at that moment).
    """
    import contextlib
    import io

    from detkit.config import load_config
    from detkit.train.trainer import train

    config = write_config(tmp_path_factory.mktemp("short_run"), dataset_dir)
    calls = []

    def on_checkpoint(path: str, step: int) -> None:
        calls.append((path, step, read_scalars(os.path.dirname(os.path.dirname(path)))))

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(load_config([config]), on_checkpoint=on_checkpoint)
    return result, config, err.getvalue(), calls


# ---------------------------------------------------------------- a short run
def test_short_run_writes_config_classes_and_final_checkpoint(short_run):
    """Also a regression test: step 3 is a batch of the negative image alone (boxes [1, 0, 4])."""
    import yaml

    from detkit.config import from_dict
    from detkit import runs

    result, config, stderr, _ = short_run
    run_dir = Path(result.run_dir)
    assert run_dir == Path(config).parent / "jobs" / "tiny"
    assert result.step == 4
    assert result.checkpoint == str(run_dir / "checkpoints" / "ckpt-4")
    assert (run_dir / "checkpoints" / "ckpt-4.index").is_file()
    assert runs.latest_checkpoint(str(run_dir)) == result.checkpoint
    # checkpoint_every_steps 100 > 4 steps: the final one is the only one.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.index")) == ["ckpt-4.index"]
    saved = from_dict(yaml.safe_load((run_dir / "config.yml").read_text()))
    assert (saved.train.num_steps, saved.model.rpn.channels, saved.dataset.split) == (4, 32, "synth")
    assert json.loads((run_dir / "classes.json").read_text()) == ["box", "disc"]
    assert runs.resolve(str(run_dir)).step == 4
    assert "finished at step 4" in stderr and "resuming" not in stderr


def test_short_run_logs_losses_and_learning_rate_to_tensorboard(short_run):
    result, _, _, _ = short_run
    scalars = read_scalars(result.run_dir)
    assert LOSS_TAGS | {"learning_rate", "images_per_second"} <= set(scalars), sorted(scalars)
    for tag in LOSS_TAGS | {"learning_rate"}:
        assert sorted(scalars[tag]) == [1, 2, 4], (tag, scalars[tag])  # step 1, then every 2nd step
    # Constant 0.001 after 2 warm-up steps: logged step 1 ran at 0.001 * 1/2, step 2 at 0.001 * 2/2.
    assert scalars["learning_rate"] == pytest.approx({1: 0.0005, 2: 0.001, 4: 0.001})
    for step in (1, 2, 4):
        parts = sum(scalars[t][step] for t in LOSS_TAGS - {"losses/total"})
        assert scalars["losses/total"][step] == pytest.approx(parts, rel=1e-5)
        assert all(math.isfinite(scalars[t][step]) for t in LOSS_TAGS)
        assert scalars["losses/rpn_class"][step] > 0
    assert scalars["losses/total"][4] == pytest.approx(result.last_losses["total"], rel=1e-5)


def test_summaries_are_on_disk_when_a_checkpoint_is_written(short_run):
    """A run resumed after a crash starts at its last checkpoint: TensorBoard must hold every step up to it."""
    result, _, _, calls = short_run
    assert [(path, step) for path, step, _ in calls] == [(result.checkpoint, 4)]
    on_disk = calls[0][2]
    for tag in LOSS_TAGS | {"learning_rate"}:
        assert sorted(on_disk.get(tag, {})) == [1, 2, 4], (tag, on_disk.get(tag))


def test_resume_in_process_continues_from_the_checkpoint(short_run, tmp_path, capsys):
    """Copy the finished 4-step run and ask for 6 steps: it resumes at 4 and writes ckpt-6."""
    from detkit.config import load_config
    from detkit.train.trainer import train

    result, config, _, _ = short_run
    job_dir = tmp_path / "jobs"
    shutil.copytree(result.run_dir, job_dir / "tiny")
    resumed = train(load_config([config], [f"train.job_dir={job_dir}", "train.num_steps=6"]))
    stderr = capsys.readouterr().err
    assert f"resuming {job_dir / 'tiny'} from step 4" in stderr
    assert resumed.step == 6 and resumed.checkpoint.endswith("ckpt-6")
    scalars = read_scalars(resumed.run_dir)
    assert sorted(scalars["losses/total"]) == [1, 2, 4, 6]  # old events kept, step 6 added

    # Asking again for the same 6 steps does nothing but report the checkpoint.
    again = train(load_config([config], [f"train.job_dir={job_dir}", "train.num_steps=6"]))
    assert (again.step, again.checkpoint) == (6, resumed.checkpoint)
    assert "from step 6" in capsys.readouterr().err


# ---------------------------------------------------------------- resuming an incompatible run
def test_resume_with_changed_architecture_is_a_one_line_error(run_detkit, short_run, tmp_path):
    result, config, _, _ = short_run
    job_dir = tmp_path / "jobs"
    shutil.copytree(result.run_dir, job_dir / "tiny")
    before = (job_dir / "tiny" / "config.yml").read_text()
    code, out, err = run_detkit("train", "-c", config, "-o", f"train.job_dir={job_dir}",
                                "-o", "model.rpn.channels=16")
    assert code == 1 and out == ""
    line = the_error_line(err)
    assert "cannot resume: model.rpn.channels changed" in line, line
    assert "train.run_name" in line  # says how to get out of it
    assert (job_dir / "tiny" / "config.yml").read_text() == before  # the run is left as it was


def test_resume_with_unreadable_saved_config_is_a_one_line_error(run_detkit, short_run, tmp_path):
    result, config, _, _ = short_run
    job_dir = tmp_path / "jobs"
    shutil.copytree(result.run_dir, job_dir / "tiny")
    (job_dir / "tiny" / "config.yml").write_text("model: [unclosed\n", encoding="utf-8")
    code, _, err = run_detkit("train", "-c", config, "-o", f"train.job_dir={job_dir}")
    assert code == 1
    line = the_error_line(err)
    assert "config.yml line 2: cannot read run config" in line and "restore the config.yml" in line, line


# ---------------------------------------------------------------- the NaN guard
NAN_OVERRIDES = ["train.learning_rate.base=1.0e+30", "train.optimizer.clip_norm=0", "train.optimizer.type=sgd",
                 "train.num_steps=3"]


def test_non_finite_loss_raises_naming_the_step(dataset_dir, tmp_path):
    """Step 1's loss is finite; its update (lr 1e30, no clipping) makes step 2's loss inf or NaN."""
    from detkit.config import load_config
    from detkit.train.trainer import NonFiniteLossError, train

    config = write_config(tmp_path, dataset_dir)
    cfg = load_config([config], NAN_OVERRIDES + ["train.checkpoint_every_steps=1"])
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    message = str(info.value)
    assert "loss became non-finite at step 2 (" in message, message
    assert "total=" in message and ("nan" in message or "inf" in message)
    assert f"last good checkpoint: {tmp_path / 'jobs' / 'tiny' / 'checkpoints' / 'ckpt-1'}" in message
    assert "train.learning_rate.base" in message
    assert info.value.exit_code != 0 and "\n" not in message


def test_non_finite_loss_through_the_cli(run_detkit, dataset_dir, tmp_path):
    config = write_config(tmp_path, dataset_dir)
    args = [x for o in NAN_OVERRIDES for x in ("-o", o)]
    code, out, err = run_detkit("train", "-c", config, *args)
    assert code == 1 and out == ""
    line = the_error_line(err)
    assert "non-finite at step 2" in line and "none written yet" in line, line


# ---------------------------------------------------------------- config errors
def test_missing_dataset_dir_is_a_config_error(run_detkit, tmp_path):
    (tmp_path / "cfg.yml").write_text(f"train: {{job_dir: {tmp_path / 'jobs'}, num_steps: 2}}\n", encoding="utf-8")
    code, out, err = run_detkit("train", "-c", str(tmp_path / "cfg.yml"))
    assert code == 2 and out == ""
    line = the_error_line(err)
    assert "dataset.dir" in line and "required" in line, line
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_dataset_dir_that_is_not_a_transform_output(run_detkit, tmp_path, kind):
    bogus = tmp_path / "not_a_dataset"
    if kind == "empty":
        bogus.mkdir()
        (bogus / "photo.jpg").write_bytes(b"\xff\xd8")
    code, _, err = run_detkit("train", "-o", f"dataset.dir={bogus}",
                              "-o", f"train.job_dir={tmp_path / 'jobs'}")
    assert code == 1
    line = the_error_line(err)
    assert f"{bogus / 'classes.json'} not found: not a `detkit dataset transform` output directory" in line, line
    assert not (tmp_path / "jobs").exists()


def test_dataset_split_that_does_not_exist(run_detkit, dataset_dir, tmp_path):
    config = write_config(tmp_path, dataset_dir)
    code, _, err = run_detkit("train", "-c", config, "-o", "dataset.split=train")
    assert code == 1
    line = the_error_line(err)
    assert "no shards of split 'train' (splits available: synth)" in line, line
    assert not (tmp_path / "jobs").exists()


def test_bad_override_value_is_a_config_error(run_detkit, dataset_dir, tmp_path):
    config = write_config(tmp_path, dataset_dir)
    code, _, err = run_detkit("train", "-c", config, "-o", "train.batch_size=two")
    assert code == 2
    assert "train.batch_size" in the_error_line(err)


# ---------------------------------------------------------------- kill -9, then resume
@pytest.mark.slow
def test_resume_after_kill_9(dataset_dir, tmp_path):
    """Kill `detkit train` hard once a checkpoint exists; the same command resumes and ends at num_steps."""
    import tensorflow as tf

    from detkit.runs import step_of

    num_steps = 10
    config = write_config(tmp_path, dataset_dir)
    text = Path(config).read_text()
    text = text.replace("num_steps: 4", f"num_steps: {num_steps}").replace("checkpoint_every_steps: 100",
                                                                           "checkpoint_every_steps: 1")
    Path(config).write_text(text.replace("log_every_steps: 2", "log_every_steps: 1"), encoding="utf-8")
    command = [sys.executable, "-m", "detkit", "train", "-c", config]
    run_dir = tmp_path / "jobs" / "tiny"
    ckpt_dir = run_dir / "checkpoints"

    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
        try:
            seen = None
            deadline = time.time() + 120
            while first.poll() is None and time.time() < deadline:
                if (ckpt_dir / "checkpoint").is_file():
                    seen = tf.train.latest_checkpoint(str(ckpt_dir))
                    if seen:
                        first.kill()  # SIGKILL: no chance to save or clean up
                        break
                time.sleep(0.02)
        finally:
            if first.poll() is None and seen is None:
                first.kill()
            first.wait()
    first_err = (tmp_path / "first.err").read_text()
    assert seen is not None and first.returncode == -9, (first.returncode, first_err[-2000:])
    assert step_of(seen) < num_steps

    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    match = re.search(r"resuming (\S+) from step (\d+) \((\S+)\)", second.stderr)
    assert match, second.stderr[-3000:]
    restored = int(match.group(2))
    assert match.group(1) == str(run_dir)
    assert 0 < restored < num_steps and restored >= step_of(seen)
    assert match.group(3) == str(ckpt_dir / f"ckpt-{restored}")
    assert f"finished at step {num_steps}" in second.stderr
    assert second.stdout.strip() == str(run_dir)
    assert tf.train.latest_checkpoint(str(ckpt_dir)) == str(ckpt_dir / f"ckpt-{num_steps}")
    # TensorBoard has every step once: the first run's up to its last checkpoint, then the resumed run's.
    scalars = read_scalars(str(run_dir))
    assert sorted(scalars["losses/total"]) == list(range(1, num_steps + 1))
    assert len(glob.glob(str(run_dir / "train" / "events.out.tfevents.*"))) == 2


def test_training_after_a_model_ran_warns_that_the_onednn_cap_comes_too_late(dataset_dir, tmp_path, monkeypatch,
                                                                             capsys):
    """On a CPU that needs the training cap, in a process that already ran a detector (oneDNN's ISA is fixed)."""
    from detkit.config import load_config
    from detkit.train.trainer import train
    from detkit.utils import cpu

    monkeypatch.delenv(cpu.ONEDNN_ISA_VAR, raising=False)  # restored after the test; this process's oneDNN keeps its own
    monkeypatch.setattr(cpu, "onednn_isa_cap", lambda vendor, flags: "AVX2")
    monkeypatch.setattr(cpu, "_models_ran", True)
    train(load_config([write_config(tmp_path, dataset_dir)], ["train.num_steps=1"]))
    assert "this process ran a detector before training" in capsys.readouterr().err
    monkeypatch.delenv(cpu.ONEDNN_ISA_VAR, raising=False)
    monkeypatch.setattr(cpu, "_models_ran", False)
    train(load_config([write_config(tmp_path / "again", dataset_dir)], ["train.num_steps=1"]))
    assert "before training" not in capsys.readouterr().err and os.environ[cpu.ONEDNN_ISA_VAR] == "AVX2"
