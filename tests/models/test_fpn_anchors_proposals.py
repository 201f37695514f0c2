import numpy as np
import tensorflow as tf

from detkit.models import anchors, proposals
from detkit.models.transform import floor_hw, input_hw, mask_and_pad


def test_rounded_base_anchors_as_torchvision():
    # size 32: ratio 0.5 -> w = 45.25, h = 22.63 -> halves 22.63, 11.31 -> rounded 23, 11.
    np.testing.assert_array_equal(anchors.rounded_base_anchors([32], [0.5, 1.0, 2.0]),
                                  [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    # Ratio-major, then size.
    np.testing.assert_array_equal(anchors.rounded_base_anchors([16, 32], [1.0])[:, 2], [8, 16])


def test_level_stride_is_integer_division_of_the_padded_size():
    # P6 of an 800x1344 batch is 13x21: torchvision's strides are 61 and 64, not 64 and 64.
    np.testing.assert_array_equal(anchors.level_stride([800, 1344], [13, 21]).numpy(), [61, 64])


def test_level_anchors_sit_on_cell_corners_row_major():
    gen = anchors.AnchorGenerator(((2,),), (1.0,), (4,), "torchvision")
    (out,) = [a.numpy() for a in gen([[2, 2]], tf.constant([8, 16]))]  # strides 8 // 2 = 4 and 16 // 2 = 8
    np.testing.assert_array_equal(out, [[-1, -1, 1, 1], [7, -1, 9, 1], [-1, 3, 1, 5], [7, 3, 9, 5]])


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_multilevel_proposals_nms_within_levels_thresholds_and_top_n():
    zero = tf.zeros([1, 3, 4])
    # Level 0: two overlapping boxes (IoU 0.81) and a tiny one; level 1: a copy of level 0's best box.
    a0 = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [20.0, 20.0, 20.0005, 30.0]])
    a1 = tf.constant([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [30.0, 30.0, 40.0, 40.0]])
    l0 = tf.constant([[_logit(0.9), _logit(0.8), _logit(0.95)]])
    l1 = tf.constant([[_logit(0.7), _logit(0.04), _logit(0.6)]])
    boxes, scores, valid = proposals.generate_proposals(
        [l0, l1], [zero, zero], [a0, a1], tf.constant([[100.0, 100.0]]), pre_nms_top_n=2, post_nms_top_n=4,
        nms_iou=0.7, min_size=1e-3, score_threshold=0.05)
    # Level 0's top 2 are the tiny box (dropped) and the 10x10 one (kept); the 10x9 one is not in its top 2.
    # Level 1's top 2 are the copy (kept: NMS is per level) and the 0.6 one; the 0.04 one is below the threshold.
    np.testing.assert_array_equal(valid.numpy(), [[True, True, True, False]])
    np.testing.assert_allclose(scores.numpy()[0, :3], [0.9, 0.7, 0.6], rtol=1e-5)
    np.testing.assert_allclose(boxes.numpy()[0, :3], [[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]])


def test_multilevel_proposals_suppress_overlaps_within_a_level():
    zero = tf.zeros([1, 2, 4])
    a0 = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    logits = tf.constant([[_logit(0.9), _logit(0.8)]])
    _, scores, valid = proposals.generate_proposals(
        [logits], [zero], [a0], tf.constant([[100.0, 100.0]]), 10, 5, 0.7, 1e-3, 0.0)
    # IoU 0.9 > 0.7: the second is suppressed.
    np.testing.assert_array_equal(valid.numpy()[0], [True, False, False, False, False])
    np.testing.assert_allclose(scores.numpy()[0, 0], 0.9, rtol=1e-6)


def test_mask_and_pad_zeroes_outside_each_image_and_pads_to_a_multiple():
    images = tf.ones([2, 5, 6, 1])
    out = mask_and_pad(images, tf.constant([[5, 6], [3, 2]]), 4).numpy()[..., 0]
    assert out.shape == (2, 8, 8)
    assert out[0].sum() == 30 and out[0, :5, :6].min() == 1
    assert out[1].sum() == 6 and out[1, :3, :2].min() == 1
    # Whole images (one image as resize_batch gives it): nothing zeroed, the same padding.
    whole = mask_and_pad(images, None, 4).numpy()[..., 0]
    assert whole.shape == (2, 8, 8) and whole.sum() == 60 and whole[:, :5, :6].min() == 1


def test_floor_sizes_are_pythons_float64_ones_by_integers_alone():
    # 800 / 161 * 161 is 799.9999999999999 in float64 (torchvision resizes to 799); 800 / 141 * 141 is 800.0;
    # 1333 / 193 * 193 is 1333.0.
    np.testing.assert_array_equal(floor_hw(tf.constant([[161, 253], [141, 233], [193, 101]]), 800, 1333).numpy(),
                                  [[799, 1257], [800, 1321], [1333, 697]])
    h, w = np.meshgrid(np.arange(1, 701), np.arange(1, 701), indexing="ij")
    hw = np.stack([h.ravel(), w.ravel()], -1)
    for min_size, max_size in ((800, 1333), (320, 640)):
        scale = np.minimum(min_size / hw.min(1), max_size / hw.max(1))[:, None]  # numpy's float64 is Python's
        expected = np.maximum(np.floor(hw * scale), 1)
        np.testing.assert_array_equal(floor_hw(tf.constant(hw), min_size, max_size).numpy(), expected)
    # Beyond the table the exact quotient's floor: 800 / 8562 * 8562 is 799.9999999999999 in float64.
    assert 800 / 8562 * 8562 < 800 and floor_hw(tf.constant([8562, 9000]), 800, 1333).numpy().tolist() == [800, 840]


def test_floor_rounding_is_torchvisions_resized_size():
    # torchvision: 320 / 183 and 183 * that in float64 give exactly 320; in float32 the product is 319.99998.
    np.testing.assert_array_equal(input_hw(tf.constant([183, 275]), 320, 640, "floor").numpy(), [320, 480])
    np.testing.assert_array_equal(input_hw(tf.constant([183, 275]), 320, 640, "round").numpy(), [320, 481])
    # The long side caps the scale: 640 / 400 = 1.6, 100 * 1.6 = 160.
    np.testing.assert_array_equal(input_hw(tf.constant([100, 400]), 320, 640, "floor").numpy(), [160, 640])
