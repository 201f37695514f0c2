"""The training loop: build, restore or resume, step, log, checkpoint, stop on time or steps.

Over 300 lines on purpose: resuming, the step loop and its clock-based stop/save decisions share the strategy,
the checkpoint manager and the progress bar, and every branch must agree across workers; split apart they
would pass all of that state around. The pieces without that state live beside it (step.py, resume.py, strategy.py,
precision.py, summaries.py) and run directories in detkit/runs/.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from detkit.config import Config, dump_yaml
from detkit.datasets import pipeline
from detkit.datasets.sources import check_training_sources
from detkit.datasets.tfrecord import data_loss_error
from detkit.errors import CheckpointError, ConfigError, DetkitError, Terminated, first_line, is_disk_full
from detkit.models.faster_rcnn import FasterRCNN, build_detector
from detkit import runs
from detkit.recipe.config import TrainingConfig, requested_config, training_config
from detkit.runs import layout
from detkit.runs.lock import RunLock
from detkit.train.resume import check_resumable, run_dir_for
from detkit.runs.restore import is_damaged, restore_for_finetuning
from detkit.train import precision, summaries
from detkit.train import strategy as strategies
from detkit.train.optimizers import build_optimizer
from detkit.train.schedules import learning_rate
from detkit.train.step import make_replica_step
from detkit.utils import atomic, cpu
from detkit.utils.pause import pause_point, wake
from detkit.utils.progress import progress


class NonFiniteLossError(DetkitError):
    """The loss, or the weights after an update, became NaN or Inf."""


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


def _log(message: str) -> None:
    """A log line on stderr."""
    print(f"detkit: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """An event set by SIGTERM (how schedulers preempt), so the loop saves a checkpoint and stops."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signal handlers can only be set from the main thread
        return

    def on_term(signum: int, frame: object) -> None:
        requested.set()
        wake()  # a test's pause point, if the process is paused at one

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def _all_finite(variables: list) -> bool:
    """Whether every value of every variable is finite."""
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables]))


def _total_steps(cfg: Config, num_images: int) -> int:
    """train.num_steps, or enough steps for train.num_epochs."""
    if cfg.train.num_steps > 0:
        return cfg.train.num_steps
    return max(1, math.ceil(cfg.train.num_epochs * num_images / cfg.train.batch_size))


def build_model(cfg: Config, num_classes: int) -> FasterRCNN:
    """A Faster R-CNN with all variables created."""
    model = build_detector(cfg.model, num_classes)
    model.build_for_inference()
    return model


def _describe_devices(model: keras.Model, strategy_line: str) -> str:
    """One line: devices, strategy and trainable parameter count."""
    gpus = tf.config.list_logical_devices("GPU")
    device = f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)"
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return f"device {device}, {strategy_line}, {params / 1e6:.2f} M trainable parameters"


def _agree(strategy: tf.distribute.Strategy, workers: int, flags: list[bool]) -> list[bool]:
    """Flags OR-ed over all workers, so clock-based decisions (stop, save) are taken by every worker together.

    Saving and stopping involve every worker under multi-worker training: one worker deciding alone on its
    own clock would leave the others waiting in an all-reduce forever.
    """
    if workers <= 1:
        return flags
    value = tf.constant([1.0 if f else 0.0 for f in flags])
    reduced = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)), axis=None)
    return [bool(v > 0.5) for v in reduced.numpy()]


@dataclass
class Distribution:
    """The tf.distribute strategy of this process, why it was chosen, and this process's place in the cluster."""

    strategy: tf.distribute.Strategy
    name: str
    why: str
    cluster: Optional[strategies.ClusterSpec]
    chief: bool


def start_distribution(requested: str) -> Distribution:
    """Build the strategy train.strategy names; it must come before any other TensorFlow op runs in this process,
    as multi-worker collectives can only be configured at start-up."""
    cluster = strategies.parse_tf_config()
    name, why = strategies.resolve(requested, cluster, len(tf.config.list_physical_devices("GPU")))
    if name != "multi_worker":
        cluster = None
    return Distribution(strategies.build(name), name, why, cluster, strategies.is_chief(cluster))


def train_from_options(config_files: Sequence[str] = (), overrides: Sequence[str] = (),
                       dataset_dir: Optional[str] = None, minutes: Optional[float] = None) -> TrainResult:
    """`detkit train`: the strategy first, then the config with the recipe read from the data, then training.

    The recipe reads the training split through TensorFlow, so it comes after the strategy: a multi-worker
    strategy cannot start once TensorFlow has run an op. Every worker derives the same recipe from the same data.
    """
    requested = requested_config(config_files, overrides, dataset_dir, minutes)
    distribution = start_distribution(requested.train.strategy)
    tc = training_config(config_files, overrides, dataset_dir, minutes)
    return train(tc.config, recipe=tc, distribution=distribution)


def train(cfg: Config, on_checkpoint: Optional[Callable[[str, int], None]] = None,
          recipe: Optional[TrainingConfig] = None, distribution: Optional[Distribution] = None) -> TrainResult:
    """Train (or resume) the run described by `cfg` and return where its checkpoint is.

    `recipe` (how detkit.recipe derived `cfg` from the data) is logged before training and written as
    recipe.json beside the run's config.yml. `distribution` is the strategy started for this run (by default
    the one cfg.train.strategy names, started here: call this before running any other TensorFlow op).
    """
    d = distribution or start_distribution(cfg.train.strategy)
    replicas = d.strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ConfigError(f"config key train.batch_size: the global batch ({cfg.train.batch_size}) must be a "
                          f"multiple of the {replicas} replicas of strategy {d.name}")
    return _train(cfg, on_checkpoint, d.strategy, d.name, d.why, d.cluster, d.chief, recipe)


def _train(cfg: Config, on_checkpoint, strategy: tf.distribute.Strategy, strategy_name: str, strategy_why: str,
           cluster: Optional[strategies.ClusterSpec], chief: bool, recipe: Optional[TrainingConfig] = None
           ) -> TrainResult:
    """train() once the strategy exists."""
    log = _log if chief else (lambda message: None)
    if recipe is not None and recipe.describe():
        log(recipe.describe())
    class_names = check_training_sources(cfg.dataset)
    num_images = pipeline.count_records(cfg.dataset.dir, cfg.dataset.split)
    if num_images == 0:
        raise ConfigError(f"config key dataset.split: split {cfg.dataset.split!r} of {cfg.dataset.dir} is empty")
    if cluster is not None and not cfg.train.run_name:
        raise ConfigError("config key train.run_name: required for multi-worker training "
                          "(every worker must name the same run directory)")
    run_dir = run_dir_for(cfg, _total_steps(cfg, num_images), log)
    if not chief:
        return _train_in(cfg, on_checkpoint, strategy, strategy_name, strategy_why, cluster, chief, log,
                         class_names, num_images, run_dir, recipe)
    lock = RunLock(run_dir, log)
    try:
        lock.acquire()
    except OSError as exc:
        fix = ("free some space or set train.job_dir to another disk" if is_disk_full(exc)
               else "set train.job_dir to a writable directory")
        raise DetkitError(f"{run_dir}: cannot write the run directory ({first_line(exc)}); {fix}") from None
    try:
        return _train_in(cfg, on_checkpoint, strategy, strategy_name, strategy_why, cluster, chief, log,
                         class_names, num_images, run_dir, recipe)
    finally:
        lock.release()


def _train_in(cfg: Config, on_checkpoint, strategy: tf.distribute.Strategy, strategy_name: str, strategy_why: str,
              cluster: Optional[strategies.ClusterSpec], chief: bool, log: Callable[[str], None],
              class_names: list[str], num_images: int, run_dir: str,
              recipe: Optional[TrainingConfig] = None) -> TrainResult:
    """_train once the run directory is chosen (and, on the chief, locked)."""
    replicas = strategy.num_replicas_in_sync
    resume_from = runs.latest_checkpoint(run_dir)
    if resume_from:
        check_resumable(run_dir, cfg, class_names)
    if chief:
        try:
            atomic.write_text(layout.config_path(run_dir), dump_yaml(cfg))
            atomic.write_json(layout.classes_path(run_dir), class_names)
            if recipe is not None and recipe.record():
                atomic.write_json(layout.recipe_path(run_dir), recipe.record())
        except OSError as exc:
            fix = ("free some space or set train.job_dir to another disk" if is_disk_full(exc)
                   else "set train.job_dir to a writable directory")
            raise DetkitError(f"{run_dir}: cannot write the run directory ({first_line(exc)}); {fix}") from None
        ckpt_dir = layout.checkpoint_dir(run_dir)
    else:
        # Every worker takes part in saving (the variables are mirrored), but only the chief's copy is kept.
        # Local temp, not job_dir: a worker killed mid-run then leaves nothing behind on the shared storage.
        try:
            ckpt_dir = tempfile.mkdtemp(prefix=f"detkit-worker{cluster.task_index}-checkpoints-")
        except OSError as exc:
            raise DetkitError(f"cannot create a worker's temporary checkpoint directory ({exc.strerror})") from None
    try:
        return _loop(cfg, on_checkpoint, strategy, strategy_name, strategy_why, chief, log, replicas,
                     cluster.num_workers if cluster else 1, class_names, num_images, run_dir, resume_from, ckpt_dir)
    finally:
        if not chief:
            shutil.rmtree(ckpt_dir, ignore_errors=True)


def _loop(cfg: Config, on_checkpoint, strategy: tf.distribute.Strategy, strategy_name: str, strategy_why: str,
          chief: bool, log: Callable[[str], None], replicas: int, workers: int, class_names: list[str], num_images: int,
          run_dir: str, resume_from: Optional[str], ckpt_dir: str) -> TrainResult:
    """Build under the strategy, restore, run the steps and checkpoint."""
    hardware = precision.detect_hardware()
    choice = precision.choose_policy(cfg.train.mixed_precision, hardware)
    if choice.policy == "mixed_bfloat16" and not hardware.gpu_compute_capabilities and not cpu.bf16_runnable_in_process():
        raise ConfigError(
            "config key train.mixed_precision: mixed_bfloat16 cannot run in this process: oneDNN is capped at "
            f"{os.environ.get(cpu.ONEDNN_ISA_VAR)} and has no bfloat16 convolution there; `detkit train` starts "
            f"TensorFlow with {cpu.ONEDNN_OPTS_VAR}=0 for it, or set that variable before importing TensorFlow"
        )
    log(precision.describe(choice))
    if choice.warning:
        log(f"warning: {choice.warning}")
    keras.utils.set_random_seed(cfg.train.seed)
    total_steps = _total_steps(cfg, num_images)
    lr_cfg = cfg.train.learning_rate
    with strategy.scope(), precision.policy_scope(choice):
        model = build_model(cfg, len(class_names))
        optimizer = precision.wrap_optimizer(
            build_optimizer(cfg.train.optimizer, learning_rate(lr_cfg, 0, 0.0, total_steps)), choice)
        optimizer.build(model.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        elapsed_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, elapsed=elapsed_var)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=cfg.train.keep_checkpoints if chief else 1)
    if resume_from:
        try:
            ckpt.restore(resume_from).assert_existing_objects_matched()
        except (AssertionError, tf.errors.OpError, ValueError, IndexError, KeyError) as exc:
            if not is_damaged(exc):
                raise CheckpointError(f"{resume_from}: cannot resume ({first_line(exc)})") from None
            raise CheckpointError(
                f"{resume_from}: cannot resume, the checkpoint is damaged ({first_line(exc)}); delete it with "
                f"`detkit checkpoint delete {resume_from} --yes` to resume from the one before") from None
        log(f"resuming {run_dir} from step {int(step_var.numpy())} ({resume_from})")
    elif cfg.train.init_from:
        source = runs.resolve(cfg.train.init_from)
        same = len(runs.load_class_names(source.run_dir)) == len(class_names)
        restore_for_finetuning(model, source.prefix, same)
        log(f"initialised from {source.prefix}" + ("" if same else " (class heads re-initialised)"))

    strategy_line = f"strategy {strategy_name} ({strategy_why}; {replicas} replica{'s' if replicas > 1 else ''})"
    log(f"{_describe_devices(model, strategy_line)}; {num_images} images, batch {cfg.train.batch_size}, "
         f"{total_steps} steps" + (f" or {cfg.train.max_minutes:g} minutes" if cfg.train.max_minutes else "")
         + f"; run dir {run_dir}")

    start_step = int(step_var.numpy())
    keys = ("image", "image_hw", "boxes", "labels")

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = pipeline.training_dataset(cfg.dataset, context.get_per_replica_batch_size(cfg.train.batch_size),
                                       seed=cfg.train.seed + start_step,
                                       shard=(context.num_input_pipelines, context.input_pipeline_id))
        return ds.map(lambda b: {k: b[k] for k in keys})

    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    replica_step = make_replica_step(model, optimizer, replicas, choice.loss_scaling)

    @tf.function(input_signature=[dataset.element_spec], reduce_retracing=True)
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    if chief:
        # Steps past the checkpoint (past 0 when there is none) were logged by a killed run and are about to be
        # trained, and logged, again.
        summaries.drop_steps_after(os.path.join(run_dir, "train"), start_step)
    writer = (tf.summary.create_file_writer(os.path.join(run_dir, "train")) if chief
              else tf.summary.create_noop_writer())
    max_seconds = cfg.train.max_minutes * 60.0
    step = start_step
    losses_np: dict = {}
    last_save_time = time.time()
    timer_start = time.time() - float(elapsed_var.numpy())
    images_seen = 0
    loop_start = time.time()
    # The first step includes tracing the tf.function; the steady rate leaves it out.
    first_step_end: Optional[float] = None

    def elapsed() -> float:
        return time.time() - timer_start

    def save() -> str:
        # The loss of a step is computed before its update: only the weights tell whether the update was finite.
        if not _all_finite(model.trainable_variables + list(optimizer.variables)):
            kept = manager.latest_checkpoint or "none written yet"
            raise NonFiniteLossError(
                f"weights became non-finite by step {step} (the update of a step whose loss was finite); not "
                f"saved. Last finite checkpoint: {kept}. Lower train.learning_rate.base or set "
                "train.optimizer.clip_norm")
        step_var.assign(step)
        elapsed_var.assign(elapsed())
        writer.flush()  # every step up to a checkpoint is on disk with it: a resumed run logs from there on
        try:
            path = manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as exc:
            fix = "free some space" if is_disk_full(exc) else "make train.job_dir writable"
            raise DetkitError(f"{run_dir}: cannot write checkpoint ({first_line(exc)}); {fix}, then run the same "
                              "command to resume from the last one") from None
        if on_checkpoint and chief:
            on_checkpoint(path, step)
        return path

    bar = progress(total=total_steps, desc="train", unit="step", disable=not chief)
    bar.update(start_step)
    iterator = iter(dataset)
    stop_requests = _stop_requests()
    stop_requested = stop_requests.__enter__()
    terminated = False
    try:
        while step < total_steps:
            # One agreement for both: every worker stops at the same step (see _agree).
            time_up, terminated = _agree(strategy, workers, [bool(max_seconds and elapsed() >= max_seconds),
                                                             stop_requested.is_set()])
            if time_up or terminated:
                break
            frac = step / total_steps
            if max_seconds:
                frac = max(frac, elapsed() / max_seconds)
            lr = learning_rate(lr_cfg, step, frac, total_steps)
            optimizer.learning_rate.assign(lr)
            try:
                batch = next(iterator)
            except tf.errors.DataLossError as exc:  # a truncated or corrupt shard: name it, no traceback
                raise data_loss_error(cfg.dataset.dir, cfg.dataset.split, exc) from None
            losses = train_step(batch)
            losses_np = {k: float(v) for k, v in losses.items()}
            if not math.isfinite(losses_np["total"]):
                bad = ", ".join(f"{k}={v}" for k, v in losses_np.items() if not math.isfinite(v))
                kept = manager.latest_checkpoint or "none written yet"
                raise NonFiniteLossError(
                    f"loss became non-finite at step {step + 1} ({bad}); last good checkpoint: {kept}. "
                    "Lower train.learning_rate.base or set train.optimizer.clip_norm"
                )
            step += 1
            images_seen += cfg.train.batch_size
            if first_step_end is None:
                first_step_end = time.time()
            rate = images_seen / max(time.time() - loop_start, 1e-9)
            if max_seconds:
                # A time-bounded run ends when the clock does: size the bar (and its ETA) to match.
                per_step = (time.time() - loop_start) / max(step - start_step, 1)
                by_time = step + int(max(max_seconds - elapsed(), 0.0) / per_step)
                bar.total = max(step, min(total_steps, by_time))
            bar.update(1)
            bar.set_postfix(loss=f"{losses_np['total']:.3f}", img_s=f"{rate:.1f}", lr=f"{lr:.2g}", refresh=False)
            if step % cfg.train.log_every_steps == 0 or step == 1:
                summaries.write_scalars(writer, step, {f"losses/{k}": v for k, v in losses_np.items()})
                summaries.write_scalars(writer, step, {"learning_rate": lr, "images_per_second": rate})
            if chief and cfg.train.image_summary_every_steps and step % cfg.train.image_summary_every_steps == 0:
                _image_summary(model, _local(strategy, batch), writer, step)
            if (chief and cfg.train.eval_split and cfg.train.eval_every_steps
                    and step % cfg.train.eval_every_steps == 0):
                _periodic_eval(cfg, model, class_names, writer, step)
            by_clock = _agree(strategy, workers, [time.time() - last_save_time >= cfg.train.checkpoint_every_minutes * 60])[0]
            if step % cfg.train.checkpoint_every_steps == 0 or by_clock:
                save()
                last_save_time = time.time()
            pause_point(f"train.step-{step}")
        if terminated:
            bar.close()
            path = save()
            log(f"stopped by SIGTERM at step {step}; checkpoint saved to {path}; run the same command to resume")
            raise Terminated()
    except Terminated:
        raise
    except KeyboardInterrupt:
        bar.close()
        path = save()
        log(f"interrupted at step {step}; checkpoint saved to {path}; run the same command to resume")
        raise
    except BaseException:
        # An open bar would leave the CLI's `detkit: error:` line glued to the bar's line.
        bar.close()
        raise
    finally:
        stop_requests.__exit__(None, None, None)
    bar.close()
    path = manager.latest_checkpoint
    if path is None or runs.step_of(path) != step:
        path = save()
    writer.flush()
    seconds = time.time() - loop_start
    ips = images_seen / seconds if seconds > 0 else 0.0
    steady_steps = step - start_step - 1
    steady = (steady_steps * cfg.train.batch_size / (time.time() - first_step_end)
              if first_step_end is not None and steady_steps > 0 else ips)
    if not chief:
        path = os.path.join(layout.checkpoint_dir(run_dir), os.path.basename(path))
    log(f"finished at step {step} after {elapsed() / 60:.1f} min ({ips:.2f} images/s, {steady:.2f} after the first step); "
        f"checkpoint {path}")
    return TrainResult(run_dir=run_dir, checkpoint=path, step=step, minutes=elapsed() / 60.0,
                       images_per_second=ips, last_losses=losses_np, steady_images_per_second=steady,
                       chief=chief)


def _local(strategy: tf.distribute.Strategy, batch: dict) -> dict:
    """This worker's first replica's part of a distributed batch."""
    return {k: strategy.experimental_local_results(v)[0] for k, v in batch.items()}


def _image_summary(model: FasterRCNN, batch: dict, writer, step: int) -> None:
    """Draw the first image of the batch with its ground truth, proposals and detections."""
    hw = batch["image_hw"][:1]
    image = batch["image"][:1, : int(hw[0, 0]), : int(hw[0, 1])]
    out = model((image, hw), training=False)
    n = int(out["num_detections"][0])
    gt = tf.boolean_mask(batch["boxes"][0], batch["labels"][0] > 0)
    proposals = out["proposals"][0, :5] if "proposals" in out else tf.zeros([0, 4])
    drawn = summaries.detection_image(image[0], gt, proposals, out["boxes"][0, : min(n, 10)])
    summaries.write_detection_image(writer, step, drawn)


def _periodic_eval(cfg: Config, model: FasterRCNN, class_names: list[str], writer, step: int) -> None:
    """VOC mAP at eval.iou_threshold, COCO AP, PR curves and confusion matrix on train.eval_split, under eval/."""
    from detkit.eval.metrics import map_key, map_label
    from detkit.eval.runner import evaluate_and_summarise

    metrics = evaluate_and_summarise(model, cfg, cfg.dataset.dir, cfg.train.eval_split, class_names, writer, step)
    key = map_key(cfg.eval.iou_threshold)
    summaries.write_scalars(writer, step, {f"eval/{key}": metrics[key], "eval/coco_ap": metrics["coco_ap"]})
    _log(f"step {step}: {cfg.train.eval_split} {map_label(cfg.eval.iou_threshold)} {metrics[key]:.3f}, "
         f"COCO AP {metrics['coco_ap']:.3f}")
