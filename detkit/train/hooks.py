"""What a training run does around its steps, one hook each (see detkit/train/loop.py)."""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from typing import Callable, Optional

import tensorflow as tf

from detkit.config.schema import LearningRateConfig
from detkit.errors import DetkitError, Terminated, first_line, is_disk_full
from detkit.train import summaries
from detkit.train.loop import Hook, TrainingLoop
from detkit.train.schedules import learning_rate
from detkit.utils.pause import pause_point, wake
from detkit.utils.progress import progress


class NonFiniteLossError(DetkitError):
    """The loss, or the weights after an update, became NaN or Inf."""


def log(message: str) -> None:
    """A log line on stderr."""
    print(f"detkit: {message}", file=sys.stderr, flush=True)


class Clock:
    """Training time, carried over a resume (the run's elapsed seconds are saved in its checkpoints)."""

    def __init__(self, elapsed_before: float = 0.0):
        self.start = time.time() - elapsed_before

    def elapsed(self) -> float:
        """Seconds of training so far, earlier sessions of the run included."""
        return time.time() - self.start


class LearningRate(Hook):
    """Sets the optimizer's learning rate before each step: the schedule over the steps, or over the clock
    when the run is bounded by minutes."""

    def __init__(self, optimizer, cfg: LearningRateConfig, clock: Clock, max_seconds: float):
        self.optimizer, self.cfg, self.clock, self.max_seconds = optimizer, cfg, clock, max_seconds
        self.value = 0.0

    def before_step(self, loop: TrainingLoop) -> None:
        frac = loop.step / loop.total_steps
        if self.max_seconds:
            frac = max(frac, self.clock.elapsed() / self.max_seconds)
        self.value = learning_rate(self.cfg, loop.step, frac, loop.total_steps)
        self.optimizer.learning_rate.assign(self.value)


class TimeLimit(Hook):
    """Stops the run once train.max_minutes of training have passed."""

    votes = True

    def __init__(self, clock: Clock, max_seconds: float):
        self.clock, self.max_seconds = clock, max_seconds

    def stop_reason(self, loop: TrainingLoop) -> bool:
        return bool(self.max_seconds and self.clock.elapsed() >= self.max_seconds)


class NonFiniteLoss(Hook):
    """Stops the run on a NaN or Inf loss, naming the last checkpoint written before it."""

    def __init__(self, checkpoints: "Checkpoints"):
        self.checkpoints = checkpoints

    def after_step(self, loop: TrainingLoop) -> None:
        if loop.finite_loss():
            return
        bad = ", ".join(f"{k}={v}" for k, v in loop.losses.items() if not math.isfinite(v))
        raise NonFiniteLossError(
            f"loss became non-finite at step {loop.step} ({bad}); last good checkpoint: "
            f"{self.checkpoints.latest() or 'none written yet'}. Lower train.learning_rate.base or set "
            "train.optimizer.clip_norm")


class Checkpoints(Hook):
    """Saves every `every_steps` steps and `every_minutes` minutes (decided by all workers together), at the
    end, and on Ctrl-C; never weights that are not finite."""

    def __init__(self, manager: tf.train.CheckpointManager, variables: list, step_var: tf.Variable,
                 elapsed_var: tf.Variable, clock: Clock, writer, run_dir: str, every_steps: int,
                 every_minutes: float, on_save: Optional[Callable[[str, int], None]] = None,
                 log: Callable[[str], None] = log):
        self.log = log
        self.manager, self.variables, self.step_var, self.elapsed_var = manager, variables, step_var, elapsed_var
        self.clock, self.writer, self.run_dir = clock, writer, run_dir
        self.every_steps, self.every_seconds, self.on_save = every_steps, every_minutes * 60.0, on_save
        self.last_save_time = time.time()
        self.path: Optional[str] = None

    def latest(self) -> Optional[str]:
        """The newest checkpoint of the run."""
        return self.manager.latest_checkpoint

    def save(self, step: int) -> str:
        """Write a checkpoint of `step`; refuses weights that are not finite."""
        # The loss of a step is computed before its update: only the weights tell whether the update was finite.
        if not bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in self.variables])):
            raise NonFiniteLossError(
                f"weights became non-finite by step {step} (the update of a step whose loss was finite); not "
                f"saved. Last finite checkpoint: {self.latest() or 'none written yet'}. Lower "
                "train.learning_rate.base or set train.optimizer.clip_norm")
        self.step_var.assign(step)
        self.elapsed_var.assign(self.clock.elapsed())
        self.writer.flush()  # every step up to a checkpoint is on disk with it: a resumed run logs from there on
        try:
            self.path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as exc:
            fix = "free some space" if is_disk_full(exc) else "make train.job_dir writable"
            raise DetkitError(f"{self.run_dir}: cannot write checkpoint ({first_line(exc)}); {fix}, then run the "
                              "same command to resume from the last one") from None
        self.last_save_time = time.time()
        if self.on_save:
            self.on_save(self.path, step)
        return self.path

    def after_step(self, loop: TrainingLoop) -> None:
        by_clock = loop.agree([time.time() - self.last_save_time >= self.every_seconds])[0]
        if loop.step % self.every_steps == 0 or by_clock:
            self.save(loop.step)

    def after_train(self, loop: TrainingLoop) -> None:
        latest = self.latest()
        if latest is None or int(latest.rsplit("-", 1)[-1]) != loop.step:
            self.save(loop.step)
        else:
            self.path = latest

    def on_interrupt(self, loop: TrainingLoop) -> None:
        path = self.save(loop.step)
        self.log(f"interrupted at step {loop.step}; checkpoint saved to {path}; run the same command to resume")


class StopOnSigterm(Hook):
    """SIGTERM (how schedulers preempt) ends the run at the next step, saved: after Checkpoints' final save, it
    says so and raises Terminated (exit code 143)."""

    votes = True

    def __init__(self, checkpoints: Checkpoints):
        self.checkpoints = checkpoints
        self.requested = threading.Event()
        self.previous = None

    def before_train(self, loop: TrainingLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def on_term(signum: int, frame: object) -> None:
            self.requested.set()
            wake()  # a test's pause point, if the process is paused at one

        self.previous = signal.signal(signal.SIGTERM, on_term)

    def stop_reason(self, loop: TrainingLoop) -> bool:
        return self.requested.is_set()

    def _restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def after_train(self, loop: TrainingLoop) -> None:
        self._restore()
        if loop.stopped_by is self:
            self.checkpoints.log(f"stopped by SIGTERM at step {loop.step}; checkpoint saved to "
                                 f"{self.checkpoints.path}; run the same command to resume")
            raise Terminated()

    def on_interrupt(self, loop: TrainingLoop) -> None:
        self._restore()

    def on_error(self, loop: TrainingLoop) -> None:
        self._restore()


class Progress(Hook):
    """The progress bar: steps, loss, images/s, learning rate, and an ETA that follows the clock."""

    def __init__(self, clock: Clock, max_seconds: float, batch_size: int, learning_rate_hook: LearningRate,
                 enabled: bool = True):
        self.clock, self.max_seconds, self.batch_size = clock, max_seconds, batch_size
        self.lr, self.enabled = learning_rate_hook, enabled
        self.bar = None
        self.start = time.time()
        self.first_step_end: Optional[float] = None

    def before_train(self, loop: TrainingLoop) -> None:
        self.bar = progress(total=loop.total_steps, desc="train", unit="step", disable=not self.enabled)
        self.bar.update(loop.start_step)
        self.start = time.time()

    def images_per_second(self, loop: TrainingLoop) -> float:
        """Images trained per second in this session."""
        return (loop.step - loop.start_step) * self.batch_size / max(time.time() - self.start, 1e-9)

    def steady_images_per_second(self, loop: TrainingLoop) -> float:
        """The same, leaving out the first step (which traces the step function)."""
        steps = loop.step - loop.start_step - 1
        if self.first_step_end is None or steps <= 0:
            return self.images_per_second(loop)
        return steps * self.batch_size / max(time.time() - self.first_step_end, 1e-9)

    def after_step(self, loop: TrainingLoop) -> None:
        if self.first_step_end is None:
            self.first_step_end = time.time()
        if self.max_seconds:
            # A time-bounded run ends when the clock does: size the bar (and its ETA) to match.
            per_step = (time.time() - self.start) / max(loop.step - loop.start_step, 1)
            by_time = loop.step + int(max(self.max_seconds - self.clock.elapsed(), 0.0) / per_step)
            self.bar.total = max(loop.step, min(loop.total_steps, by_time))
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loop.losses['total']:.3f}", img_s=f"{self.images_per_second(loop):.1f}",
                             lr=f"{self.lr.value:.2g}", refresh=False)

    def close(self) -> None:
        """Close the bar: an open one would leave the next line on stderr glued to it."""
        if self.bar is not None:
            self.bar.close()

    def after_train(self, loop: TrainingLoop) -> None:
        self.close()

    def on_interrupt(self, loop: TrainingLoop) -> None:
        self.close()

    def on_error(self, loop: TrainingLoop) -> None:
        self.close()


class Scalars(Hook):
    """The losses, learning rate and images/s in TensorBoard, every `every_steps` steps and at the first."""

    def __init__(self, writer, every_steps: int, progress_hook: Progress, learning_rate_hook: LearningRate):
        self.writer, self.every_steps, self.progress, self.lr = writer, every_steps, progress_hook, learning_rate_hook

    def after_step(self, loop: TrainingLoop) -> None:
        if loop.step % self.every_steps == 0 or loop.step == 1:
            summaries.write_scalars(self.writer, loop.step, {f"losses/{k}": v for k, v in loop.losses.items()})
            summaries.write_scalars(self.writer, loop.step, {"learning_rate": self.lr.value,
                                                              "images_per_second":
                                                                  self.progress.images_per_second(loop)})


class DetectionImages(Hook):
    """Every `every_steps` steps, the first image of the batch in TensorBoard with its ground truth, top
    proposals and detections."""

    def __init__(self, model, writer, every_steps: int, local_batch: Callable[[dict], dict]):
        self.model, self.writer, self.every_steps, self.local_batch = model, writer, every_steps, local_batch

    def after_step(self, loop: TrainingLoop) -> None:
        if not self.every_steps or loop.step % self.every_steps:
            return
        batch = self.local_batch(loop.batch)
        hw = batch["image_hw"][:1]
        image = batch["image"][:1, : int(hw[0, 0]), : int(hw[0, 1])]
        out = self.model.stages(image, hw)
        n = int(out["num_detections"][0])
        gt = tf.boolean_mask(batch["boxes"][0], batch["labels"][0] > 0)
        drawn = summaries.detection_image(image[0], gt, out["proposals"][0, :5], out["boxes"][0, : min(n, 10)])
        summaries.write_detection_image(self.writer, loop.step, drawn)


class PeriodicEvaluation(Hook):
    """Every `every_steps` steps, VOC mAP and COCO AP on train.eval_split, in TensorBoard and on stderr."""

    def __init__(self, evaluate: Callable[[int], None], every_steps: int):
        self.evaluate, self.every_steps = evaluate, every_steps

    def after_step(self, loop: TrainingLoop) -> None:
        if self.every_steps and loop.step % self.every_steps == 0:
            self.evaluate(loop.step)


class PauseAtSteps(Hook):
    """Test support: pauses at `train.step-N` when DETKIT_PAUSE_AT names it (see detkit/utils/pause.py)."""

    def after_step(self, loop: TrainingLoop) -> None:
        pause_point(f"train.step-{loop.step}")
