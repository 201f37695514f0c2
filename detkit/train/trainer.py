"""`detkit train`: set a run up (strategy, run directory and its lock, model, optimizer, resume or start weights,
input), then run the training loop (detkit/train/loop.py) with its hooks (detkit/train/hooks.py).

The pieces live beside it: step.py (one replica's step), resume.py (which run directory, and whether it can
resume), strategy.py, precision.py, summaries.py; run directories in detkit/runs/.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from detkit import runs
from detkit.config import Config, dump_yaml
from detkit.datasets import pipeline
from detkit.datasets.sources import check_training_sources
from detkit.datasets.tfrecord import data_loss_error
from detkit.errors import CheckpointError, ConfigError, DetkitError, first_line, is_disk_full
from detkit.eval.runner import evaluate_and_summarise
from detkit.models.build import build_detector
from detkit.models.faster_rcnn import FasterRCNN
from detkit.pretrained.initial_weights import load_initial_weights
from detkit.recipe.config import TrainingConfig, requested_config, training_config
from detkit.runs import layout
from detkit.runs.lock import RunLock
from detkit.runs.metrics import map_key, map_label
from detkit.runs.restore import is_damaged, restore_for_finetuning
from detkit.train import hooks, precision, summaries
from detkit.train import strategy as strategies
from detkit.train.hooks import NonFiniteLossError
from detkit.train.loop import TrainingLoop
from detkit.train.optimizers import build_optimizer
from detkit.train.resume import check_resumable, run_dir_for
from detkit.train.schedules import learning_rate
from detkit.train.step import make_replica_step
from detkit.utils import atomic, cpu
from detkit.utils.pause import PAUSE_ENV

__all__ = ["NonFiniteLossError", "TrainResult", "build_model", "train", "train_from_options"]


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: str
    checkpoint: str
    step: int
    minutes: float
    images_per_second: float
    last_losses: dict
    steady_images_per_second: float = 0.0
    # False on the non-chief workers of a multi-worker run (their checkpoints were temporary).
    chief: bool = True


@dataclass
class Run:
    """What a run trains, decided before anything is built: its config, data, run directory and distribution."""

    cfg: Config
    distribution: strategies.Distribution
    class_names: list[str]
    num_images: int
    run_dir: str
    log: Callable[[str], None]

    @property
    def total_steps(self) -> int:
        """train.num_steps, or enough steps for train.num_epochs."""
        return total_steps(self.cfg, self.num_images)


def total_steps(cfg: Config, num_images: int) -> int:
    """train.num_steps, or enough steps for train.num_epochs."""
    if cfg.train.num_steps > 0:
        return cfg.train.num_steps
    return max(1, math.ceil(cfg.train.num_epochs * num_images / cfg.train.batch_size))


def build_model(cfg: Config, num_classes: int) -> FasterRCNN:
    """A Faster R-CNN with all variables created."""
    return build_detector(cfg, num_classes)


def train_from_options(config_files: Sequence[str] = (), overrides: Sequence[str] = (),
                       dataset_dir: Optional[str] = None, minutes: Optional[float] = None,
                       from_scratch: bool = False) -> TrainResult:
    """`detkit train`: the strategy first, then the config with the recipe read from the data (fine-tuning a
    downloaded COCO detector unless `from_scratch` or a model is chosen), then training.

    The recipe reads the training split through TensorFlow, so it comes after the strategy: a multi-worker
    strategy cannot start once TensorFlow has run an op. Every worker derives the same recipe from the same data.
    """
    requested = requested_config(config_files, overrides, dataset_dir, minutes)
    cpu.apply_onednn_workaround()
    distribution = strategies.start(requested.train.strategy)
    tc = training_config(config_files, overrides, dataset_dir, minutes, from_scratch)
    return train(tc.config, recipe=tc, distribution=distribution)


def train(cfg: Config, on_checkpoint: Optional[Callable[[str, int], None]] = None,
          recipe: Optional[TrainingConfig] = None,
          distribution: Optional[strategies.Distribution] = None) -> TrainResult:
    """Train (or resume) the run described by `cfg` and return where its checkpoint is.

    `recipe` (how detkit.recipe derived `cfg` from the data) is logged before training and written as
    recipe.json beside the run's config.yml. `distribution` is the strategy started for this run (by default
    the one cfg.train.strategy names, started here: call this before running any other TensorFlow op).
    """
    cap = cpu.apply_onednn_workaround()
    late_cap = cap if cpu.model_ran() else None
    d = distribution or strategies.start(cfg.train.strategy)
    replicas = d.strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ConfigError(f"config key train.batch_size: the global batch ({cfg.train.batch_size}) must be a "
                          f"multiple of the {replicas} replicas of strategy {d.name}")
    log = hooks.log if d.chief else (lambda message: None)
    if late_cap:
        log(f"warning: this process ran a detector before training, so oneDNN may already use AVX-512, whose "
            f"training kernels crash TensorFlow 2.21 on this CPU (benchmarks/onednn_repro.py): train in a fresh "
            f"process, or set {cpu.ONEDNN_ISA_VAR}={late_cap} before the first model runs")
    if recipe is not None and recipe.describe():
        log(recipe.describe())
    class_names = check_training_sources(cfg.dataset)
    num_images = pipeline.count_records(cfg.dataset.dir, cfg.dataset.split)
    if num_images == 0:
        raise ConfigError(f"config key dataset.split: split {cfg.dataset.split!r} of {cfg.dataset.dir} is empty")
    if d.cluster is not None and not cfg.train.run_name:
        raise ConfigError("config key train.run_name: required for multi-worker training "
                          "(every worker must name the same run directory)")
    run = Run(cfg, d, class_names, num_images, run_dir_for(cfg, total_steps(cfg, num_images), log), log)
    with _locked(run):
        resume_from = runs.latest_checkpoint(run.run_dir)
        if resume_from:
            check_resumable(run.run_dir, cfg, class_names)
        if d.chief:
            _write_run_files(run, recipe)
        with _checkpoint_dir(run) as ckpt_dir:
            return _train(run, resume_from, ckpt_dir, on_checkpoint)


def _cannot_write(run_dir: str, exc: OSError) -> DetkitError:
    """The one-line error for a run directory that cannot be written."""
    fix = ("free some space or set train.job_dir to another disk" if is_disk_full(exc)
           else "set train.job_dir to a writable directory")
    return DetkitError(f"{run_dir}: cannot write the run directory ({first_line(exc)}); {fix}")


@contextlib.contextmanager
def _locked(run: Run) -> Iterator[None]:
    """The run directory's lock, held by the chief while it trains (other workers write nothing there)."""
    if not run.distribution.chief:
        yield
        return
    lock = RunLock(run.run_dir, run.log)
    try:
        lock.acquire()
    except OSError as exc:
        raise _cannot_write(run.run_dir, exc) from None
    try:
        yield
    finally:
        lock.release()


def _write_run_files(run: Run, recipe: Optional[TrainingConfig]) -> None:
    """config.yml, classes.json and recipe.json of the run."""
    try:
        atomic.write_text(layout.config_path(run.run_dir), dump_yaml(run.cfg))
        atomic.write_json(layout.classes_path(run.run_dir), run.class_names)
        if recipe is not None and recipe.record():
            atomic.write_json(layout.recipe_path(run.run_dir), recipe.record())
    except OSError as exc:
        raise _cannot_write(run.run_dir, exc) from None


@contextlib.contextmanager
def _checkpoint_dir(run: Run) -> Iterator[str]:
    """Where this process saves: the run's checkpoints/ on the chief, a temporary directory on other workers.

    Every worker takes part in saving (the variables are mirrored), but only the chief's copy is kept. Local
    temp, not job_dir: a worker killed mid-run then leaves nothing behind on the shared storage.
    """
    if run.distribution.chief:
        yield layout.checkpoint_dir(run.run_dir)
        return
    try:
        path = tempfile.mkdtemp(prefix=f"detkit-worker{run.distribution.cluster.task_index}-checkpoints-")
    except OSError as exc:
        raise DetkitError(f"cannot create a worker's temporary checkpoint directory ({exc.strerror})") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _precision(run: Run) -> precision.PrecisionChoice:
    """The dtype policy, refused where this process cannot run it."""
    hardware = precision.detect_hardware()
    choice = precision.choose_policy(run.cfg.train.mixed_precision, hardware)
    if choice.policy == "mixed_bfloat16" and not hardware.gpu_compute_capabilities and not cpu.bf16_runnable_in_process():
        raise ConfigError(
            "config key train.mixed_precision: mixed_bfloat16 cannot run in this process: oneDNN is capped at "
            f"{os.environ.get(cpu.ONEDNN_ISA_VAR)} and has no bfloat16 convolution there; `detkit train` starts "
            f"TensorFlow with {cpu.ONEDNN_OPTS_VAR}=0 for it, or set that variable before importing TensorFlow"
        )
    run.log(precision.describe(choice))
    if choice.warning:
        run.log(f"warning: {choice.warning}")
    return choice


def _start_weights(run: Run, checkpoint: tf.train.Checkpoint, model: FasterRCNN, resume_from: Optional[str]) -> None:
    """Resume from the run's checkpoint, or initialise from train.init_from, or load the body's start weights."""
    cfg = run.cfg
    if resume_from:
        try:
            checkpoint.restore(resume_from).assert_existing_objects_matched()
        except (AssertionError, tf.errors.OpError, ValueError, IndexError, KeyError) as exc:
            if not is_damaged(exc):
                raise CheckpointError(f"{resume_from}: cannot resume ({first_line(exc)})") from None
            raise CheckpointError(
                f"{resume_from}: cannot resume, the checkpoint is damaged ({first_line(exc)}); delete it with "
                f"`detkit checkpoint delete {resume_from} --yes` to resume from the one before") from None
        run.log(f"resuming {run.run_dir} from step {int(checkpoint.step.numpy())} ({resume_from})")
    elif cfg.train.init_from:
        source = runs.resolve(cfg.train.init_from)
        same = len(runs.load_class_names(source.run_dir)) == len(run.class_names)
        restore_for_finetuning(model, source.prefix, same)
        run.log(f"initialised from {source.prefix}" + ("" if same else " (class heads re-initialised)"))
    else:
        load_initial_weights(model, cfg.model.base_network)


def _describe(run: Run, model: FasterRCNN) -> str:
    """One line: devices, strategy, parameters, data, schedule and run directory."""
    gpus = tf.config.list_logical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)"
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    t = run.cfg.train
    return (f"device {device}, {run.distribution.describe()}, {params / 1e6:.2f} M trainable parameters; "
            f"{run.num_images} images, batch {t.batch_size}, {run.total_steps} steps"
            + (f" or {t.max_minutes:g} minutes" if t.max_minutes else "") + f"; run dir {run.run_dir}")


def _dataset(run: Run, model: FasterRCNN, start_step: int) -> tf.distribute.DistributedDataset:
    """The distributed training batches, each worker reading its own shards."""
    cfg = run.cfg
    keys = ("image", "image_hw", "boxes", "labels")

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = pipeline.training_dataset(cfg.dataset, model.transform,
                                       context.get_per_replica_batch_size(cfg.train.batch_size),
                                       seed=cfg.train.seed + start_step,
                                       shard=(context.num_input_pipelines, context.input_pipeline_id))
        return ds.map(lambda b: {k: b[k] for k in keys})

    return run.distribution.strategy.distribute_datasets_from_function(dataset_fn)


def _batches(run: Run, dataset: tf.distribute.DistributedDataset) -> Iterator[dict]:
    """The dataset's batches; a truncated or corrupt shard becomes a DatasetError naming it."""
    iterator = iter(dataset)
    while True:
        try:
            yield next(iterator)
        except tf.errors.DataLossError as exc:
            raise data_loss_error(run.cfg.dataset.dir, run.cfg.dataset.split, exc) from None


def _train(run: Run, resume_from: Optional[str], ckpt_dir: str,
           on_checkpoint: Optional[Callable[[str, int], None]]) -> TrainResult:
    """Build under the strategy, restore, and run the loop with its hooks."""
    cfg, d = run.cfg, run.distribution
    strategy, chief = d.strategy, d.chief
    choice = _precision(run)
    keras.utils.set_random_seed(cfg.train.seed)
    lr_cfg = cfg.train.learning_rate
    with strategy.scope(), precision.policy_scope(choice):
        model = build_model(cfg, len(run.class_names))
        optimizer = precision.wrap_optimizer(
            build_optimizer(cfg.train.optimizer, learning_rate(lr_cfg, 0, 0.0, run.total_steps)), choice)
        optimizer.build(model.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        elapsed_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, elapsed=elapsed_var)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=cfg.train.keep_checkpoints if chief else 1)
    _start_weights(run, checkpoint, model, resume_from)
    run.log(_describe(run, model))
    start_step = int(step_var.numpy())
    dataset = _dataset(run, model, start_step)
    replica_step = make_replica_step(model, optimizer, strategy.num_replicas_in_sync, choice.loss_scaling)

    @tf.function(input_signature=[dataset.element_spec], reduce_retracing=True)
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    if chief:
        # Steps past the checkpoint (past 0 when there is none) were logged by a killed run and are about to be
        # trained, and logged, again.
        summaries.drop_steps_after(os.path.join(run.run_dir, "train"), start_step)
    writer = (tf.summary.create_file_writer(os.path.join(run.run_dir, "train")) if chief
              else tf.summary.create_noop_writer())
    t = cfg.train
    max_seconds = t.max_minutes * 60.0
    clock = hooks.Clock(float(elapsed_var.numpy()))
    rate = hooks.LearningRate(optimizer, lr_cfg, clock, max_seconds)
    saves = hooks.Checkpoints(manager, model.trainable_variables + list(optimizer.variables), step_var,
                              elapsed_var, clock, writer, run.run_dir, t.checkpoint_every_steps,
                              t.checkpoint_every_minutes, on_checkpoint if chief else None, run.log)
    bar = hooks.Progress(clock, max_seconds, t.batch_size, rate, enabled=chief)
    steps: list[hooks.Hook] = [rate, hooks.TimeLimit(clock, max_seconds), hooks.NonFiniteLoss(saves), bar,
                               hooks.Scalars(writer, t.log_every_steps, bar, rate)]
    if chief:
        local = lambda batch: {k: strategy.experimental_local_results(v)[0] for k, v in batch.items()}  # noqa: E731
        steps.append(hooks.DetectionImages(model, writer, t.image_summary_every_steps, local))
        if t.eval_split:
            steps.append(hooks.PeriodicEvaluation(lambda step: _evaluate(run, model, writer, step),
                                                  t.eval_every_steps))
    steps += [saves, hooks.StopOnSigterm(saves)]
    if os.environ.get(PAUSE_ENV):
        steps.append(hooks.PauseAtSteps())
    loop = TrainingLoop(train_step, _batches(run, dataset), start_step, run.total_steps, steps, d.agree)
    loop.run()
    writer.flush()
    path = saves.path if chief else os.path.join(layout.checkpoint_dir(run.run_dir), os.path.basename(saves.path))
    ips, steady = bar.images_per_second(loop), bar.steady_images_per_second(loop)
    run.log(f"finished at step {loop.step} after {clock.elapsed() / 60:.1f} min ({ips:.2f} images/s, {steady:.2f} "
            f"after the first step); checkpoint {path}")
    return TrainResult(run_dir=run.run_dir, checkpoint=path, step=loop.step, minutes=clock.elapsed() / 60.0,
                       images_per_second=ips, last_losses=loop.losses, steady_images_per_second=steady,
                       chief=chief)


def _evaluate(run: Run, model: FasterRCNN, writer, step: int) -> None:
    """VOC mAP at eval.iou_threshold, COCO AP, PR curves and the confusion matrix on train.eval_split, under eval/."""
    cfg = run.cfg
    metrics = evaluate_and_summarise(model, cfg, cfg.dataset.dir, cfg.train.eval_split, run.class_names, writer, step)
    key = map_key(cfg.eval.iou_threshold)
    summaries.write_scalars(writer, step, {f"eval/{key}": metrics[key], "eval/coco_ap": metrics["coco_ap"]})
    hooks.log(f"step {step}: {cfg.train.eval_split} {map_label(cfg.eval.iou_threshold)} {metrics[key]:.3f}, "
              f"COCO AP {metrics['coco_ap']:.3f}")
