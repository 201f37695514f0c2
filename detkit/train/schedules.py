"""Learning rate as a function of training progress (a fraction of the run) and step."""
from __future__ import annotations

import math

from detkit.config.schema import LearningRateConfig


def learning_rate(cfg: LearningRateConfig, step: int, progress: float, total_steps: int) -> float:
    """The learning rate at `step`, where `progress` in [0, 1] is how much of the run is done.

    Progress (not the step alone) drives the decay so that a run bounded by time (train.max_minutes)
    still anneals before it ends.
    """
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        lr = cfg.base
    elif cfg.schedule == "piecewise":
        lr = cfg.base
        for boundary in cfg.boundaries:
            at = boundary if boundary <= 1.0 else boundary / max(total_steps, 1)
            if progress >= at:
                lr *= cfg.factor
    else:  # cosine
        final = cfg.base * cfg.final_fraction
        lr = final + 0.5 * (cfg.base - final) * (1.0 + math.cos(math.pi * progress))
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr
