"""The configured Keras optimizer, with a learning rate the loop sets every step."""
from __future__ import annotations

import keras

from detkit.config.schema import OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, initial_lr: float) -> keras.optimizers.Optimizer:
    """SGD with momentum, Adam or AdamW (weight decay is the model's L2 loss, not the optimizer's)."""
    clip = {"global_clipnorm": cfg.clip_norm} if cfg.clip_norm > 0 else {}
    if cfg.type == "sgd":
        return keras.optimizers.SGD(learning_rate=initial_lr, momentum=cfg.momentum, **clip)
    if cfg.type == "adam":
        return keras.optimizers.Adam(learning_rate=initial_lr, **clip)
    return keras.optimizers.AdamW(learning_rate=initial_lr, weight_decay=0.0, **clip)
