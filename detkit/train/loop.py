"""The training loop: one step function over batches, and hooks around every step (as Detectron2's TrainerBase).

The loop owns only the step count, the batches and the losses; everything else a training run does around the
steps (the learning-rate schedule, the time limit, SIGTERM, checkpoints, summaries, evaluation, the progress
bar, the non-finite guard) is a hook in detkit/train/hooks.py.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional, Sequence


class Hook:
    """Something done around the steps; every method is optional.

    A hook with `votes = True` is asked before each step whether the run should stop; the votes are agreed by
    every worker together, so such hooks must be the same, in the same order, on every worker.
    """

    votes = False

    def before_train(self, loop: "TrainingLoop") -> None:
        """Once, before the first step."""

    def stop_reason(self, loop: "TrainingLoop") -> bool:
        """Before each step (hooks that vote): whether this hook wants the run to stop now."""
        return False

    def before_step(self, loop: "TrainingLoop") -> None:
        """Before each step, once the run goes on."""

    def after_step(self, loop: "TrainingLoop") -> None:
        """After each step; loop.losses holds its losses."""

    def after_train(self, loop: "TrainingLoop") -> None:
        """Once, when the steps are done or a hook stopped the run (loop.stopped_by)."""

    def on_interrupt(self, loop: "TrainingLoop") -> None:
        """On Ctrl-C (KeyboardInterrupt), before it goes on up."""

    def on_error(self, loop: "TrainingLoop") -> None:
        """On any other exception, before it goes on up."""


class TrainingLoop:
    """Runs `step_fn` on batches until `total_steps` or until the hooks agree to stop.

    `agree` ORs a list of flags over every worker of a multi-worker run (identity in one process): decisions
    taken on a clock (stop, save) must be taken by all workers at the same step, or the others would wait in an
    all-reduce forever.
    """

    def __init__(self, step_fn: Callable[[Any], dict], batches: Iterator, start_step: int, total_steps: int,
                 hooks: Sequence[Hook], agree: Callable[[list[bool]], list[bool]] = lambda flags: flags):
        self.step_fn = step_fn
        self.batches = batches
        self.step = start_step
        self.start_step = start_step
        self.total_steps = total_steps
        self.hooks = list(hooks)
        self.agree = agree
        self.losses: dict[str, float] = {}
        self.batch: Any = None
        self.stopped_by: Optional[Hook] = None

    def run(self) -> None:
        """The steps, with every hook called around them."""
        for hook in self.hooks:
            hook.before_train(self)
        try:
            voters = [hook for hook in self.hooks if hook.votes]
            while self.step < self.total_steps:
                votes = self.agree([hook.stop_reason(self) for hook in voters])
                if any(votes):
                    self.stopped_by = voters[votes.index(True)]
                    break
                for hook in self.hooks:
                    hook.before_step(self)
                self.batch = next(self.batches)
                self.losses = {k: float(v) for k, v in self.step_fn(self.batch).items()}
                self.step += 1
                for hook in self.hooks:
                    hook.after_step(self)
        except KeyboardInterrupt:
            for hook in self.hooks:
                hook.on_interrupt(self)
            raise
        except BaseException:
            for hook in self.hooks:
                hook.on_error(self)
            raise
        for hook in self.hooks:
            hook.after_train(self)

    def finite_loss(self) -> bool:
        """Whether the last step's total loss is a number."""
        return math.isfinite(self.losses.get("total", 0.0))
