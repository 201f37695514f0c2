"""The training step's L2 weight decay, added to the gradients, checked by hand on a two-variable model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detkit.models.faster_rcnn import LossWeights
from detkit.train.step import make_replica_step


class _LinearStub:
    """Duck-typed FasterRCNN: data loss = sum(kernel * x) + bias; the kernel is decayed, the bias is not."""

    def __init__(self, l2: float):
        self.loss_weights = LossWeights(l2=l2)
        self.kernel = tf.Variable([1.0, 2.0], name="kernel")
        self.bias = tf.Variable([3.0], name="bias")
        self.trainable_variables = [self.kernel, self.bias]

    def decayed_variables(self) -> list:
        return [self.kernel]

    def l2_penalty(self) -> tf.Tensor:
        return tf.nn.l2_loss(self.kernel)

    def compute_losses(self, images, image_hw, boxes, labels, valid, training=True, include_l2=True):
        assert not include_l2
        data = tf.reduce_sum(self.kernel * images) + tf.reduce_sum(self.bias)
        return {"rpn_class": data, "total": data}


def _batch(x):
    return {"image": tf.constant(x), "image_hw": None, "boxes": None, "labels": tf.constant([1])}


@pytest.mark.parametrize("replicas", [1, 2])
def test_weight_decay_is_added_to_the_kernel_gradient_only(replicas):
    model = _LinearStub(l2=0.1)
    step = make_replica_step(model, keras.optimizers.SGD(learning_rate=1.0), replicas=replicas)
    losses = step(_batch([1.0, 1.0]))
    # d/dkernel = x + l2 * kernel = [1.1, 1.2]; d/dbias = 1; both divided by the replica count.
    np.testing.assert_allclose(model.kernel.numpy(), [1.0 - 1.1 / replicas, 2.0 - 1.2 / replicas], rtol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), [3.0 - 1.0 / replicas], rtol=1e-6)
    # The penalty is that of the weights before the update: 0.1 * 0.5 * (1 + 4) = 0.25; data loss 1 + 2 + 3 = 6.
    assert losses["l2"].numpy() == pytest.approx(0.25 / replicas)
    assert losses["total"].numpy() == pytest.approx(6.25 / replicas)


def test_same_update_as_differentiating_the_penalty():
    model = _LinearStub(l2=0.05)
    twin = _LinearStub(l2=0.05)
    make_replica_step(model, keras.optimizers.SGD(learning_rate=0.3, momentum=0.9))(_batch([0.5, -2.0]))
    optimizer = keras.optimizers.SGD(learning_rate=0.3, momentum=0.9)
    with tf.GradientTape() as tape:
        loss = twin.compute_losses(tf.constant([0.5, -2.0]), None, None, None, None, include_l2=False)["total"]
        loss += 0.05 * twin.l2_penalty()
    optimizer.apply_gradients(zip(tape.gradient(loss, twin.trainable_variables), twin.trainable_variables))
    np.testing.assert_allclose(model.kernel.numpy(), twin.kernel.numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), twin.bias.numpy(), rtol=1e-6)
