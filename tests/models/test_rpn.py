import numpy as np
import tensorflow as tf

from detkit.models import rpn
from detkit.models.matching import Sampling


def _cfg(allowed_border=0.0, minibatch_size=4):
    """Sampling and border settings of the paper's RPN, with a minibatch of 4."""
    return dict(sampling=Sampling(0.7, 0.3, 0.0, minibatch_size, 0.5), allowed_border=allowed_border)


def test_rpn_targets_tiny_case():
    anchors = tf.constant([
        [0.0, 0.0, 10.0, 10.0],    # IoU 1.0 with gt -> foreground
        [0.0, 0.0, 10.0, 20.0],    # IoU 0.5 -> ignored band
        [30.0, 30.0, 40.0, 40.0],  # IoU 0 -> background
        [-5.0, 0.0, 5.0, 10.0],    # crosses the left border -> ignored
    ])
    gt = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    t = rpn.rpn_targets(anchors, tf.constant([[50.0, 50.0]]), gt, tf.constant([[True]]), **_cfg())
    labels = t["labels"].numpy()[0]
    idx = t["indices"].numpy()[0]
    assert labels.tolist() == [1, 0, -1, -1]
    assert idx[:2].tolist() == [0, 2]
    np.testing.assert_allclose(t["box_targets"].numpy()[0, 0], [0, 0, 0, 0], atol=1e-6)
    # allowed_border < 0 keeps border-crossing anchors: anchor 3 (IoU 50/150 = 0.33) is then ignored
    # by IoU, not by position, and anchor 2 stays background.
    kept = rpn.rpn_targets(anchors, tf.constant([[50.0, 50.0]]), gt, tf.constant([[True]]), **_cfg(-1.0))
    assert kept["labels"].numpy()[0].tolist() == [1, 0, -1, -1]
    far = tf.constant([[-40.0, 0.0, -30.0, 10.0]])
    bg = rpn.rpn_targets(far, tf.constant([[50.0, 50.0]]), gt, tf.constant([[True]]), **_cfg(-1.0, minibatch_size=1))
    assert bg["labels"].numpy()[0].tolist() == [0]


def test_rpn_targets_fallback_when_no_anchor_passes():
    anchors = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 40.0, 40.0]])
    gt = tf.constant([[[0.0, 0.0, 12.0, 12.0]]])  # IoU 100/144 = 0.69 and 144/400 = 0.36: none >= 0.7
    t = rpn.rpn_targets(anchors, tf.constant([[50.0, 50.0]]), gt, tf.constant([[True]]), **_cfg())
    fg = t["indices"].numpy()[0][t["labels"].numpy()[0] == 1]
    assert fg.tolist() == [0]
    # Encoded target for the fallback anchor: centre offset (6 - 5) / 10, log(12 / 10).
    np.testing.assert_allclose(t["box_targets"].numpy()[0, 0], [0.1, 0.1, np.log(1.2), np.log(1.2)], atol=1e-5)


def test_rpn_loss_fixed_case():
    # Two sampled anchors: one fg (logit 0 -> BCE ln 2), one bg (logit 0 -> ln 2).
    targets = {
        "indices": tf.constant([[0, 1]]),
        "labels": tf.constant([[1, 0]]),
        "box_targets": tf.constant([[[1.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]]),
    }
    logits = tf.constant([[0.0, 0.0, 9.0]])
    deltas = tf.zeros([1, 3, 4])
    cls_loss, box_loss = rpn.rpn_loss(logits, deltas, targets, beta=1.0 / 9.0)
    np.testing.assert_allclose(cls_loss.numpy(), np.log(2.0), rtol=1e-5)
    # Only the fg anchor: |1| >= beta -> 1 - beta/2, divided by 2 sampled anchors.
    np.testing.assert_allclose(box_loss.numpy(), (1 - 0.5 / 9) / 2, rtol=1e-5)


def test_rpn_head_shapes():
    head = rpn.RPNHead(16, 9)
    logits, deltas = head(tf.zeros([2, 3, 5, 8]))
    assert logits.shape == (2, 3 * 5 * 9)
    assert deltas.shape == (2, 3 * 5 * 9, 4)
