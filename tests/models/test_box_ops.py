import numpy as np
import pytest
import tensorflow as tf

from detkit.models import box_ops


def test_pairwise_iou_hand_computed():
    a = tf.constant([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    b = tf.constant([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    iou = box_ops.pairwise_iou(a, b).numpy()
    # a0 vs b1: overlap 5x10 = 50, union 100 + 100 - 50 = 150.
    # a1 vs b0: overlap 5x5 = 25, union 175; a1 vs b1: overlap 10x5 = 50, union 150.
    expected = np.array([[1.0, 50 / 150, 0.0], [25 / 175, 50 / 150, 0.0]])
    np.testing.assert_allclose(iou, expected, atol=1e-6)


def test_pairwise_iou_batched_and_degenerate():
    a = tf.constant([[[0.0, 0.0, 2.0, 2.0]]])
    b = tf.constant([[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    iou = box_ops.pairwise_iou(a, b).numpy()
    np.testing.assert_allclose(iou, [[[1 / 7, 0.0]]], atol=1e-6)


def test_encode_hand_computed():
    anchors = tf.constant([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    boxes = tf.constant([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), w 20, h 20
    d = box_ops.encode(boxes, anchors).numpy()
    np.testing.assert_allclose(d, [[0.7, 0.2, np.log(2.0), 0.0]], atol=1e-6)
    dw = box_ops.encode(boxes, anchors, (10.0, 10.0, 5.0, 5.0)).numpy()
    np.testing.assert_allclose(dw, [[7.0, 2.0, 5 * np.log(2.0), 0.0]], atol=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(5, 80, (50, 2))], 1).astype(np.float32)
    xy2 = rng.uniform(0, 100, (50, 2))
    boxes = np.concatenate([xy2, xy2 + rng.uniform(5, 80, (50, 2))], 1).astype(np.float32)
    back = box_ops.decode(box_ops.encode(boxes, anchors, weights), anchors, weights).numpy()
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_decode_clamps_huge_deltas():
    anchors = tf.constant([[0.0, 0.0, 16.0, 16.0]])
    out = box_ops.decode(tf.constant([[0.0, 0.0, 100.0, 100.0]]), anchors).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 16 * 1000 / 16, rtol=1e-4)


def test_clip_and_masks():
    boxes = tf.constant([[[-5.0, 2.0, 50.0, 30.0], [10.0, 10.0, 10.5, 40.0]]])
    hw = tf.constant([[20.0, 40.0]])  # height 20, width 40
    clipped = box_ops.clip(boxes, hw[:, None, :]).numpy()
    np.testing.assert_allclose(clipped[0], [[0, 2, 40, 20], [10, 10, 10.5, 20]])
    assert box_ops.min_size_mask(boxes, 1.0).numpy().tolist() == [[True, False]]
    inside = box_ops.inside_mask(boxes, hw[:, None, :]).numpy().tolist()
    assert inside == [[False, False]]
    assert box_ops.inside_mask(tf.constant([[1.0, 1.0, 39.0, 19.0]]), tf.constant([20.0, 40.0])).numpy().tolist() == [True]
