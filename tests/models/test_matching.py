import numpy as np
import tensorflow as tf

from detkit.models import matching


def test_match_thresholds_and_ignore_band():
    # One image, 4 candidates, 1 gt box. IoUs: 0.8 fg, 0.5 ignore band, 0.2 bg, 0.05 below bg_low.
    iou = tf.constant([[[0.8], [0.5], [0.2], [0.05]]])
    labels, gt = matching.match(iou, tf.constant([[True]]), 0.7, 0.3, 0.1)
    assert labels.numpy().tolist() == [[1, -1, 0, -1]]
    assert gt.numpy().tolist() == [[0, 0, 0, 0]]


def test_match_low_quality_fallback():
    # No candidate passes 0.7; the best one for each gt becomes foreground anyway.
    iou = tf.constant([[[0.4, 0.1], [0.2, 0.6], [0.1, 0.1]]])
    labels, gt = matching.match(iou, tf.constant([[True, True]]), 0.7, 0.3, 0.0, low_quality=True)
    assert labels.numpy().tolist() == [[1, 1, 0]]
    assert gt.numpy().tolist() == [[0, 1, 0]]
    plain, _ = matching.match(iou, tf.constant([[True, True]]), 0.7, 0.3, 0.0, low_quality=False)
    assert plain.numpy().tolist() == [[-1, -1, 0]]


def test_match_ignores_padded_gt_and_empty_images():
    iou = tf.constant([[[0.9, 0.0]], [[0.9, 0.9]]])
    valid = tf.constant([[False, False], [False, True]])
    labels, gt = matching.match(iou, valid, 0.7, 0.3)
    assert labels.numpy().tolist() == [[0], [1]]
    assert gt.numpy().tolist()[1] == [1]


def test_sample_balanced_caps_foreground():
    labels = tf.constant([[1] * 10 + [0] * 10 + [-1] * 5])
    idx, valid = matching.sample_balanced(labels, minibatch_size=8, foreground_fraction=0.25)
    idx, valid = idx.numpy()[0], valid.numpy()[0]
    assert valid.all()
    picked = labels.numpy()[0][idx]
    assert picked.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert len(set(idx.tolist())) == 8


def test_sample_balanced_fills_with_background_and_pads():
    labels = tf.constant([[1, 0, 0, -1, -1], [-1, -1, -1, -1, -1]])
    idx, valid = matching.sample_balanced(labels, minibatch_size=4, foreground_fraction=0.5)
    assert valid.numpy().tolist() == [[True, True, True, False], [False, False, False, False]]
    first = labels.numpy()[0][idx.numpy()[0][:3]]
    assert sorted(first.tolist()) == [0, 0, 1]
