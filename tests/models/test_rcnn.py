import numpy as np
import tensorflow as tf

from detkit.models import rcnn
from detkit.models.matching import Sampling


def _cfg(add_gt=True):
    """RoI sampling (fg >= 0.5, bg 0.1-0.5, 4 RoIs, 25% foreground) and torchvision's box weights."""
    return dict(sampling=Sampling(0.5, 0.5, 0.1, 4, 0.25), box_weights=(10.0, 10.0, 5.0, 5.0), add_gt_boxes=add_gt)


def test_rcnn_targets_labels_and_bands():
    proposals = tf.constant([[
        [0.0, 0.0, 10.0, 10.0],    # IoU 1 with gt of class 2 -> label 2
        [0.0, 0.0, 10.0, 30.0],    # IoU 1/3 -> background
        [100.0, 100.0, 110.0, 110.0],  # no overlap (< 0.1) -> ignored
        [0.0, 0.0, 0.0, 0.0],      # padding
    ]])
    valid = tf.constant([[True, True, True, False]])
    gt = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    t = rcnn.rcnn_targets(proposals, valid, gt, tf.constant([[2]]), tf.constant([[True]]), **_cfg(add_gt=False))
    labels = t["labels"].numpy()[0]
    assert labels.tolist() == [2, 0, -1, -1]
    np.testing.assert_allclose(t["boxes"].numpy()[0, 1], [0, 0, 10, 30])


def test_rcnn_targets_adds_ground_truth():
    proposals = tf.constant([[[50.0, 50.0, 60.0, 60.0]]])
    gt = tf.constant([[[0.0, 0.0, 10.0, 10.0]]])
    t = rcnn.rcnn_targets(proposals, tf.constant([[False]]), gt, tf.constant([[1]]), tf.constant([[True]]), **_cfg())
    assert t["labels"].numpy()[0].tolist()[0] == 1
    np.testing.assert_allclose(t["box_targets"].numpy()[0, 0], [0, 0, 0, 0], atol=1e-5)


def test_rcnn_loss_fixed_case():
    # 3 classes + background; RoI 0 is class 2 with uniform logits, RoI 1 background, RoI 2 empty slot.
    logits = tf.zeros([3, 4])
    deltas = tf.constant([[[9.0] * 4, [0.5, 0.0, 0.0, 0.0], [9.0] * 4]] * 3)
    labels = tf.constant([2, 0, -1])
    targets = tf.zeros([3, 4])
    cls_loss, box_loss = rcnn.rcnn_loss(logits, deltas, labels, targets, beta=1.0)
    np.testing.assert_allclose(cls_loss.numpy(), np.log(4.0), rtol=1e-5)
    # Class 2's deltas (0.5, 0, 0, 0): 0.5 * 0.25 = 0.125, over 2 valid RoIs.
    np.testing.assert_allclose(box_loss.numpy(), 0.125 / 2, rtol=1e-5)


def test_rcnn_head_fc_shapes():
    head = rcnn.RCNNHead(3, [32, 32])
    logits, deltas = head(tf.zeros([5, 7, 7, 8]))
    assert logits.shape == (5, 4)
    assert deltas.shape == (5, 3, 4)


def test_rcnn_head_thins_features_before_pooling():
    head = rcnn.RCNNHead(3, [32], reduce_channels=6)
    thin = head.reduce_features(tf.ones([1, 4, 5, 8]))
    assert thin.shape == (1, 4, 5, 6)
    assert float(tf.reduce_min(thin)) >= 0.0  # ReLU
    assert rcnn.RCNNHead(3, [32]).reduce is None  # 0 = the backbone's features as they are
