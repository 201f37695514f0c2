import contextlib

import numpy as np
import pytest
import tensorflow as tf

from detkit.models import nms


def _boxes(rows):
    return tf.constant(rows, tf.float32)


def test_per_class_nms_by_hand():
    # Image 0: boxes 0 and 1 overlap (IoU 0.81) in class 0, box 2 stands alone; class 1 has box 1 only.
    boxes = _boxes([[[[0, 0, 10, 10]], [[0, 0, 9, 9]], [[20, 20, 30, 30]]]])
    scores = tf.constant([[[0.9, 0.0], [0.8, 0.7], [0.6, 0.0]]])
    for use_portable in (False, True):
        with nms.portable() if use_portable else contextlib.nullcontext():
            out = nms.per_class_nms(boxes, scores, max_per_class=5, max_total=4, iou_threshold=0.5,
                                    score_threshold=0.05)
        assert out.valid.numpy().tolist() == [3]
        np.testing.assert_allclose(out.scores.numpy()[0], [0.9, 0.7, 0.6, 0.0])
        assert out.classes.numpy()[0, :3].tolist() == [0, 1, 0]
        np.testing.assert_allclose(out.boxes.numpy()[0, :3], [[0, 0, 10, 10], [0, 0, 9, 9], [20, 20, 30, 30]])


@pytest.mark.parametrize("batch, classes, per_class, total", [(1, 1, 50, 50), (1, 4, 3, 10), (3, 5, 4, 6),
                                                              (2, 3, 100, 20)])
def test_batched_nms_selects_what_combined_nms_does(batch, classes, per_class, total):
    rng = np.random.default_rng(batch * 10 + classes)
    xy = rng.uniform(0, 60, (batch, 40, 1, 2))
    wh = rng.uniform(4, 30, (batch, 40, 1, 2))
    shared = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    boxes = tf.constant(shared if classes == 1 else np.repeat(shared, classes, axis=2))
    scores = tf.constant(rng.uniform(0, 1, (batch, 40, classes)).astype(np.float32))
    expected = nms.per_class_nms(boxes, scores, per_class, total, 0.5, 0.1)
    got = nms.batched_nms(boxes, scores, per_class, total, 0.5, 0.1)
    assert got.valid.numpy().tolist() == expected.valid.numpy().tolist()
    for a, b in zip(got[:3], expected[:3]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_pair_at_exactly_the_iou_threshold_is_kept_by_both():
    # IoU of (0, 0, 10, 10) and (0, 0, 10, 5) is 50 / 100 = 0.5: suppressed only above 0.5.
    boxes = _boxes([[[[0, 0, 10, 10]], [[0, 0, 10, 5]]]])
    scores = tf.constant([[[0.9], [0.8]]])
    for out in (nms.per_class_nms(boxes, scores, 10, 10, 0.5, 0.0), nms.batched_nms(boxes, scores, 10, 10, 0.5, 0.0)):
        assert out.valid.numpy().tolist() == [2]


def test_portable_applies_only_inside_the_block():
    boxes = _boxes([[[[0, 0, 1, 1]]]])
    scores = tf.constant([[[0.5]]])
    with nms.portable():
        inside = tf.function(lambda b, s: nms.per_class_nms(b, s, 1, 1, 0.5, 0.0)).get_concrete_function(
            boxes, scores)
    outside = tf.function(lambda b, s: nms.per_class_nms(b, s, 1, 1, 0.5, 0.0)).get_concrete_function(
        boxes, scores)
    ops = lambda f: {op.type for op in f.graph.get_operations()}  # noqa: E731
    assert "CombinedNonMaxSuppression" not in ops(inside) and "NonMaxSuppressionV5" in ops(inside)
    assert "CombinedNonMaxSuppression" in ops(outside)
