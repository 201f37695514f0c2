"""Learning-rate schedules: constant, piecewise (fractions and absolute steps), cosine, and warm-up, by hand."""
from __future__ import annotations

import math

import pytest

from detkit.config.schema import LearningRateConfig
from detkit.train.schedules import learning_rate


def lr_cfg(**kw) -> LearningRateConfig:
    """A schedule config; warm-up off unless given."""
    kw.setdefault("warmup_steps", 0)
    return LearningRateConfig(**kw)


def test_constant_is_base_everywhere():
    cfg = lr_cfg(schedule="constant", base=0.01)
    for step, progress in [(0, 0.0), (50, 0.5), (99, 0.99), (100, 1.0)]:
        assert learning_rate(cfg, step, progress, 100) == 0.01


def test_piecewise_with_fraction_boundaries():
    cfg = lr_cfg(schedule="piecewise", base=0.001, boundaries=[0.5, 0.75], factor=0.1)
    assert learning_rate(cfg, 0, 0.0, 1000) == pytest.approx(1e-3)
    assert learning_rate(cfg, 499, 0.499, 1000) == pytest.approx(1e-3)
    assert learning_rate(cfg, 500, 0.5, 1000) == pytest.approx(1e-4)  # boundary reached: decayed
    assert learning_rate(cfg, 749, 0.749, 1000) == pytest.approx(1e-4)
    assert learning_rate(cfg, 750, 0.75, 1000) == pytest.approx(1e-5)
    assert learning_rate(cfg, 1000, 1.0, 1000) == pytest.approx(1e-5)


def test_piecewise_with_absolute_step_boundaries():
    # 300 and 600 are steps (> 1): with 1000 steps, fractions 0.3 and 0.6.
    cfg = lr_cfg(schedule="piecewise", base=0.02, boundaries=[300, 600], factor=0.5)
    assert learning_rate(cfg, 299, 0.299, 1000) == pytest.approx(0.02)
    assert learning_rate(cfg, 300, 0.3, 1000) == pytest.approx(0.01)
    assert learning_rate(cfg, 600, 0.6, 1000) == pytest.approx(0.005)
    # A time-bounded run that is 60% done by the clock at step 100 has passed both boundaries.
    assert learning_rate(cfg, 100, 0.6, 1000) == pytest.approx(0.005)


def test_default_schedule_is_the_articles_0_001_then_0_0001_at_70_percent():
    cfg = LearningRateConfig()  # defaults: piecewise, base 0.001, [0.7], factor 0.1, 100 warm-up steps
    assert (cfg.schedule, cfg.base, cfg.boundaries, cfg.factor, cfg.warmup_steps) == ("piecewise", 0.001, [0.7], 0.1, 100)
    assert learning_rate(cfg, 500, 0.5, 1000) == pytest.approx(0.001)
    assert learning_rate(cfg, 700, 0.7, 1000) == pytest.approx(0.0001)


def test_cosine_from_base_to_final_fraction():
    cfg = lr_cfg(schedule="cosine", base=0.1, final_fraction=0.01)
    # final = 0.001; lr = 0.001 + 0.5 * 0.099 * (1 + cos(pi * p))
    assert learning_rate(cfg, 0, 0.0, 100) == pytest.approx(0.1)
    assert learning_rate(cfg, 25, 0.25, 100) == pytest.approx(0.001 + 0.0495 * (1 + math.sqrt(0.5)))  # 0.08550
    assert learning_rate(cfg, 50, 0.5, 100) == pytest.approx(0.0505)
    assert learning_rate(cfg, 75, 0.75, 100) == pytest.approx(0.001 + 0.0495 * (1 - math.sqrt(0.5)))  # 0.01550
    assert learning_rate(cfg, 100, 1.0, 100) == pytest.approx(0.001)
    # Progress is clamped to [0, 1].
    assert learning_rate(cfg, 200, 2.0, 100) == pytest.approx(0.001)
    assert learning_rate(cfg, 0, -1.0, 100) == pytest.approx(0.1)


def test_linear_warmup_then_schedule():
    cfg = lr_cfg(schedule="constant", base=0.004, warmup_steps=4)
    # step s < 4: base * (s + 1) / 4
    assert [learning_rate(cfg, s, s / 100, 100) for s in range(6)] == pytest.approx(
        [0.001, 0.002, 0.003, 0.004, 0.004, 0.004])


def test_warmup_multiplies_the_scheduled_value():
    cfg = lr_cfg(schedule="cosine", base=0.1, final_fraction=0.0, warmup_steps=10)
    # step 4 of 10 (factor 0.5) at progress 0.5 (cosine gives 0.05): 0.025
    assert learning_rate(cfg, 4, 0.5, 20) == pytest.approx(0.025)
    cfg = lr_cfg(schedule="piecewise", base=1.0, boundaries=[0.1], factor=0.1, warmup_steps=10)
    assert learning_rate(cfg, 1, 0.2, 10) == pytest.approx(0.02)  # 1.0 * 0.1 * 2 / 10
