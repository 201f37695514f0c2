"""Distributed training: TF_CONFIG parsing and the strategy choice, the local-worker launcher (its TF_CONFIGs,
prefixed output, failure propagation), one-line errors for bad input, and 2 local workers against
one process with the same global batch (~30 s, so not marked slow: it is the one end-to-end check).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from detkit.config.tiny import tiny_config_yaml
from detkit.errors import ConfigError, DetkitError
from detkit.train import launcher
from detkit.train import strategy as strategies


def cluster_env(workers: int, index: int, chief: bool = False) -> dict:
    cluster = {"worker": [f"10.0.0.{i}:2222" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["10.0.0.9:2222"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


# ---------------------------------------------------------------- TF_CONFIG and the strategy choice
def test_tf_config_names_the_cluster_and_the_chief():
    spec = strategies.parse_tf_config(cluster_env(3, 0))
    assert spec.workers == ["10.0.0.0:2222", "10.0.0.1:2222", "10.0.0.2:2222"]
    assert (spec.num_workers, spec.task_index, spec.is_chief) == (3, 0, True)
    assert strategies.parse_tf_config(cluster_env(3, 2)).is_chief is False
    # With a separate chief job, worker 0 is an ordinary worker and the chief counts as a fourth process.
    with_chief = strategies.parse_tf_config(cluster_env(3, 0, chief=True))
    assert (with_chief.num_workers, with_chief.is_chief) == (4, False)
    assert strategies.parse_tf_config({}) is None
    assert strategies.parse_tf_config({"TF_CONFIG": "  "}) is None
    assert strategies.parse_tf_config({"TF_CONFIG": '{"cluster": {}}'}) is None


@pytest.mark.parametrize("raw, words", [
    ("{not json", "not valid JSON"),
    ('["a"]', "JSON object"),
    ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}', "cluster.worker"),
    ('{"cluster": {"worker": ["h:1"]}}', "`task`"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "task.type 'ps'"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}', "task.index 2"),
])
def test_malformed_tf_config_is_a_config_error_naming_it(raw, words):
    with pytest.raises(ConfigError) as info:
        strategies.parse_tf_config({"TF_CONFIG": raw})
    assert "TF_CONFIG" in str(info.value) and words in str(info.value)


def test_auto_strategy_follows_the_cluster_then_the_gpus():
    two = strategies.parse_tf_config(cluster_env(2, 1))
    one = strategies.parse_tf_config(cluster_env(1, 0))
    assert strategies.resolve("auto", two, 0)[0] == "multi_worker"
    assert strategies.resolve("auto", one, 0)[0] == "one_device"
    assert strategies.resolve("auto", None, 4)[0] == "mirrored"
    assert strategies.resolve("auto", None, 1)[0] == "one_device"
    assert strategies.resolve("mirrored", None, 0) == ("mirrored", "configured")
    with pytest.raises(ConfigError, match="train.strategy: multi_worker needs the TF_CONFIG"):
        strategies.resolve("multi_worker", None, 0)
    assert strategies.is_chief(None) and strategies.is_chief(two) is False


# ---------------------------------------------------------------- the launcher
def test_local_tf_configs_share_one_cluster_with_distinct_ports():
    configs = [json.loads(c) for c in launcher.tf_configs(3, ports=[5001, 5002, 5003])]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == {"worker": ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]} for c in configs)
    ports = launcher.free_ports(4)
    assert len(set(ports)) == 4 and all(p > 0 for p in ports)
    with pytest.raises(ConfigError, match="--local-workers: must be >= 1, got 0"):
        launcher.tf_configs(0)


FAKE_WORKER = textwrap.dedent("""
    import json, os, sys, time
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    print(f"hello from {index}", flush=True)
    print(f"log of {index}", file=sys.stderr, flush=True)
    if index == 1 and os.environ.get("FAIL"):
        sys.exit("boom in worker 1")
    if index == 0 and os.environ.get("FAIL"):
        time.sleep(120)
""")


def test_launcher_prefixes_output_and_stops_everyone_when_one_worker_fails(tmp_path, capfd):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    command = [sys.executable, str(script)]
    assert launcher.run_local_workers(2, [], environ=dict(os.environ), command=command) == 0
    out, err = capfd.readouterr()
    # The chief's stdout is the command's result: unprefixed; everything else says whose it is.
    assert "hello from 0\n" in out and "[worker 1] hello from 1\n" in err
    assert "[worker 0] log of 0\n" in err and "[worker 1] log of 1\n" in err

    start = time.time()
    with pytest.raises(DetkitError) as info:
        launcher.run_local_workers(2, [], kill_grace_seconds=5, environ=dict(os.environ, FAIL="1"), command=command)
    assert str(info.value) == "local worker 1 of 2 exited with code 1: boom in worker 1; stopped the other workers"
    # Worker 0 would have slept two minutes: it was stopped instead.
    assert time.time() - start < 60


STOPPABLE_WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    save_seconds = float(sys.argv[1])  # finishing a step and writing the checkpoint takes a moment
    def on_signal(signum, _):
        time.sleep(save_seconds)
        print(f"worker {index} saved its checkpoint", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("ready", file=sys.stderr, flush=True)
    time.sleep(120)
""")

LAUNCHER = textwrap.dedent("""
    import sys
    from detkit.cli.main import main
    from detkit.train import launcher
    worker, grace, save_seconds = sys.argv[1:]
    try:
        launcher.run_local_workers(2, [save_seconds], kill_grace_seconds=float(grace),
                                   command=[sys.executable, worker])
    except KeyboardInterrupt as exc:
        print(f"launcher stopped: {type(exc).__name__}", file=sys.stderr, flush=True)
        sys.exit(getattr(exc, "exit_code", 130))
""")


@pytest.mark.parametrize("signame, grace, save_seconds, code, caught", [
    # Ctrl-C: the workers run in their own sessions, so it reaches them only through the launcher.
    ("SIGINT", 20, 0, 130, "KeyboardInterrupt"),
    # A scheduler preempting the job: kill_grace_seconds is 1 but a worker needs 1 s to save, so the
    # launcher gives stopping workers longer.
    ("SIGTERM", 1, 1, 143, "Terminated"),
])
def test_a_stop_signal_is_passed_on_to_every_worker_with_time_to_save(signame, grace, save_seconds, code, caught,
                                                                       tmp_path):
    """Ctrl-C or SIGTERM to `detkit train --local-workers N` reaches every worker, and each saves."""
    import signal
    import subprocess

    (tmp_path / "worker.py").write_text(STOPPABLE_WORKER)
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "launcher.py"), str(tmp_path / "worker.py"),
                             str(grace), str(save_seconds)], stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    while sum("ready" in line for line in lines) < 2:  # both workers have set their handlers
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    start = time.time()
    proc.send_signal(getattr(signal, signame))
    _, rest = proc.communicate(timeout=60)
    err = "".join(lines) + rest
    assert proc.returncode == code and time.time() - start < 20, err
    assert "[worker 0] worker 0 saved its checkpoint" in err and "[worker 1] worker 1 saved its checkpoint" in err
    assert f"launcher stopped: {caught}" in err


@pytest.mark.parametrize("args, env, message", [
    (["--local-workers", "0"], {}, "detkit: error: option --local-workers: must be >= 1, got 0\n"),
    (["--local-workers", "2", "-o", "train.run_name="], {},
     "detkit: error: config key train.run_name: required with --local-workers "
     "(every worker must name the same run directory)\n"),
    (["-o", "train.strategy=multi_worker"], {"TF_CONFIG": ""},
     "detkit: error: config key train.strategy: multi_worker needs the TF_CONFIG environment variable "
     "(or use `detkit train --local-workers N`)\n"),
    (["--local-workers", "2"], {"TF_CONFIG": json.dumps({"cluster": {"worker": ["h:1"]}})},
     "detkit: error: option --local-workers: TF_CONFIG is already set; unset it, or run without "
     "--local-workers to join that cluster\n"),
    ([], {"TF_CONFIG": "{oops"}, "detkit: error: environment variable TF_CONFIG: not valid JSON"),
    # TPUs are not offered: the config refuses the value, in one line.
    (["-o", "train.strategy=tpu"], {}, "detkit: error: config key train.strategy: tpu is not offered: TPUs run "
                                       "only XLA-compiled programs and XLA cannot compile the training step"),
])
def test_bad_distributed_input_is_a_one_line_error(run_detkit, args, env, message, tmp_path):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    code, out, err = run_detkit("train", "-o", f"dataset.dir={dataset}",
                                "-o", "train.run_name=r", "-o", f"train.job_dir={tmp_path}", *args, env=env)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and err.endswith("\n"), err


# ---------------------------------------------------------------- 2 local workers vs one process (~30 s)
def config_yaml(dataset_dir, job_dir) -> str:
    """The tiny model with frozen batch norm, no flips, plain SGD: 3 steps of batch 2."""
    return tiny_config_yaml(dataset_dir, job_dir,
                            dataset={"split": "synth", "image": {"min_size": 96, "max_size": 128}, "shuffle_buffer": 0,
                                     "augment": {"flip_horizontal": False}},
                            model={"base_network": {"freeze_batchnorm": True}},
                            train={"run_name": "run", "num_steps": 3, "checkpoint_every_steps": 100,
                                   "log_every_steps": 1,
                                   "optimizer": {"type": "sgd", "momentum": 0.0, "clip_norm": 0.0},
                                   "learning_rate": {"base": 0.01}})


def loss_scalars(run_dir: str) -> dict[str, list[float]]:
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("losses/"):
                    out.setdefault(value.tag[7:], {})[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return {k: [v for _, v in sorted(d.items())] for k, d in out.items()}


def test_two_local_workers_match_one_process_with_the_same_global_batch(synth_dataset, tmp_path):
    """About 30 s: two workers (each batch 1) and one process (batch 2) train 3 SGD steps from the same seed."""
    from detkit.config import load_config
    from detkit import runs
    from detkit.train.trainer import build_model, train_from_options

    config = tmp_path / "cfg.yml"
    config.write_text(config_yaml(synth_dataset, tmp_path / "jobs"), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "detkit", "train", "-c", str(config), "--local-workers", "2",
                           "-o", "train.run_name=two"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = str(tmp_path / "jobs" / "two")
    assert proc.stdout == two_dir + "\n"
    assert "[worker 0] detkit: device CPU" in proc.stderr and "strategy multi_worker" in proc.stderr
    assert "[worker 0] detkit: finished at step 3" in proc.stderr
    assert "[worker 0] detkit: recipe for" in proc.stderr  # the recipe ran in the workers, after the strategy
    # Only the chief logs; worker 1's checkpoints went to a local temporary directory that is gone.
    assert "[worker 1] detkit:" not in proc.stderr and "[worker 1] /" not in proc.stderr
    assert sorted(os.listdir(tmp_path / "jobs")) == ["two"]
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "detkit-worker1-checkpoints-*"))
    assert runs.latest_checkpoint(two_dir).endswith("ckpt-3")

    # The same command's path in one process, recipe included: both fill the keys the config leaves unset alike.
    single = train_from_options([str(config)], ["train.run_name=one", "train.strategy=one_device"])
    assert single.step == 3
    two, one = loss_scalars(two_dir), loss_scalars(single.run_dir)
    for key in ("total", "rpn_class", "rpn_box", "rcnn_class", "rcnn_box", "l2"):
        assert len(two[key]) == len(one[key]) == 3
        # Equal up to float round-off and the random choice of sampled anchors/RoIs (a different random
        # stream per worker): measured within 0.05 % of each other.
        np.testing.assert_allclose(two[key], one[key], rtol=0.01, atol=1e-3, err_msg=key)
    assert two["total"][-1] < two["total"][0]

    # The chief's checkpoint restores into a model built from the run's config (in this process, no strategy).
    resolved = runs.resolve(two_dir)
    cfg = load_config([runs.layout.config_path(two_dir)])
    model = build_model(cfg, 1)
    from detkit.runs.restore import restore_model

    restore_model(model, resolved.prefix)
    assert resolved.step == 3


def test_mirrored_strategy_trains_and_checkpoints_in_process(synth_dataset, tmp_path, capsys):
    """MirroredStrategy (one replica without GPUs) runs the same loop: mirrored variables, distributed input."""
    from detkit.config import load_config
    from detkit import runs
    from detkit.train.trainer import train

    config = tmp_path / "cfg.yml"
    config.write_text(config_yaml(synth_dataset, tmp_path / "jobs"), encoding="utf-8")
    result = train(load_config([str(config)], ["train.strategy=mirrored", "train.num_steps=2"]))
    assert result.step == 2 and result.chief and np.isfinite(result.last_losses["total"])
    assert runs.latest_checkpoint(result.run_dir).endswith("ckpt-2")
    assert "strategy mirrored (configured; 1 replica)" in capsys.readouterr().err


# ---------------------------------------------------------------- the default path: recipe on, as users run it
@pytest.fixture(scope="module")
def raccoon_tfdata(raccoon_dir, tmp_path_factory) -> str:
    """The packaged raccoon training split (160 photos), converted as README says."""
    out = str(tmp_path_factory.mktemp("raccoon_tf") / "tf")
    proc = subprocess.run([sys.executable, "-m", "detkit", "dataset", "transform", "--type", "csv", "--annotations",
                           os.path.join(raccoon_dir, "data", "train_labels.csv"), "--images-dir",
                           os.path.join(raccoon_dir, "images"), "--output-dir", out, "--split", "train"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("how", ["config", "dataset_dir"])
def test_two_local_workers_train_with_the_recipe_on(raccoon_tfdata, tmp_path, how):
    """`--local-workers 2` on what users run: `-c examples/raccoon.yml` and `--dataset-dir`, the recipe filling the
    keys they leave unset; the workers start their strategy before the recipe reads the data, and the chief's
    checkpoint restores."""
    from detkit.inference.detector import Detector

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    jobs = tmp_path / "jobs"
    args = (["-c", os.path.join(repo, "examples", "raccoon.yml"), "-o", f"dataset.dir={raccoon_tfdata}"]
            if how == "config" else ["--dataset-dir", raccoon_tfdata, "-o", "train.run_name=raccoon"])
    env = dict(os.environ, PYTHONPATH=repo)
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "detkit", "train", "--local-workers", "2", *args,
                           "-o", f"train.job_dir={jobs}", "-o", "train.num_steps=2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = str(jobs / "raccoon")
    assert proc.stdout == run_dir + "\n"
    assert "[worker 0] detkit: recipe for" in proc.stderr and "strategy multi_worker" in proc.stderr
    assert "[worker 0] detkit: finished at step 2" in proc.stderr
    detector = Detector.from_checkpoint(run_dir)
    assert detector.checkpoint.step == 2 and detector.class_names == ["raccoon"]
