"""One replica's training step: losses, gradients with L2 weight decay, optimizer update."""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from detkit.models.faster_rcnn import FasterRCNN


def make_replica_step(model: FasterRCNN, optimizer: keras.optimizers.Optimizer, replicas: int = 1,
                      loss_scaling: bool = False) -> Callable[[dict], dict]:
    """A function of one replica's batch that updates the model and returns its losses divided by `replicas`."""
    l2 = model.loss_weights.l2
    decayed = {id(v) for v in model.decayed_variables()}

    def replica_step(batch: dict) -> dict:
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch["image"], batch["image_hw"], batch["boxes"], batch["labels"],
                                          batch["labels"] > 0, training=True, include_l2=False)
            # Each replica's losses are means over its own images; the optimizer sums the replicas' gradients,
            # so dividing by the replica count makes the update that of the mean over the global batch.
            scaled = losses["total"] / replicas
            if loss_scaling:
                scaled = optimizer.scale_loss(scaled)
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # The gradient of the L2 penalty 0.5 * l2 * |v|^2 is l2 * v: adding it here is exact and spares the
        # backward pass one square, one sum and one gradient accumulation per kernel.
        factor = l2 / replicas
        if loss_scaling:
            factor = optimizer.scale_loss(factor)
        if l2:
            grads = [g + tf.cast(factor, g.dtype) * tf.cast(v, g.dtype) if g is not None and id(v) in decayed else g
                     for g, v in zip(grads, variables)]
        losses["l2"] = l2 * model.l2_penalty()  # of the weights the step started from, as the loss terms are
        optimizer.apply_gradients(zip(grads, variables))
        losses["total"] = losses["total"] + losses["l2"]
        return {k: v / replicas for k, v in losses.items()}

    return replica_step
