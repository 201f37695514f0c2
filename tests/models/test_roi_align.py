import math

import numpy as np
import tensorflow as tf

from detkit.models import roi_align


def _reference(features, roi, scale, out, ratio):
    """torchvision's CPU roi_align (aligned=False) written out in loops, for one image [H, W, C]."""
    h, w, _ = features.shape

    def bilinear(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return np.zeros(features.shape[-1])
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= h - 1:
            y_high = y_low = h - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= w - 1:
            x_high = x_low = w - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * features[y_low, x_low] + hy * lx * features[y_low, x_high]
                + ly * hx * features[y_high, x_low] + ly * lx * features[y_high, x_high])

    x1, y1, x2, y2 = [v * scale for v in roi]
    rw, rh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bw, bh = rw / out, rh / out
    result = np.zeros([out, out, features.shape[-1]])
    for ph in range(out):
        for pw in range(out):
            acc = 0.0
            for iy in range(ratio):
                y = y1 + ph * bh + (iy + 0.5) * bh / ratio
                for ix in range(ratio):
                    x = x1 + pw * bw + (ix + 0.5) * bw / ratio
                    acc = acc + bilinear(y, x)
            result[ph, pw] = acc / (ratio * ratio)
    return result


def _align(features, rois, scale=1.0, out=1, ratio=2):
    f = tf.constant(features, tf.float32)[None]
    r = tf.constant(rois, tf.float32)
    return roi_align.roi_align(f, r, tf.zeros([len(rois)], tf.int32), scale, out, ratio).numpy()


def test_roi_align_hand_computed_samples():
    f = np.array([[1.0, 2.0], [3.0, 4.0]])[..., None]
    out = _align(f, [[0, 0, 2, 2],        # samples (0.5, 1.5)^2: 2.5, 3, 3.5, 4 (the 1.5s clamp to the last row/col)
                     [-3, -3, -1, -1],    # every sample beyond -1: zeros
                     [-1.5, -1.5, 0.5, 0.5],  # samples at -1 and 0: clamped onto pixel (0, 0)
                     [0, 0, 0.2, 0.2]])   # width below 1 counts as 1: samples 0.25, 0.75 of 1 + x + 2y
    np.testing.assert_allclose(out[:, 0, 0, 0], [3.25, 0.0, 1.0, 2.5], atol=1e-6)


def test_roi_align_matches_torchvision_kernel_written_out():
    rng = np.random.default_rng(0)
    features = rng.normal(size=[9, 11, 3])
    rois = [[3.0, 5.0, 30.0, 20.0], [-6.0, -2.0, 10.0, 41.0], [40.0, 30.0, 47.0, 38.0], [12.5, 7.25, 13.0, 7.5]]
    got = _align(features, rois, scale=0.25, out=7, ratio=2)
    for roi, g in zip(rois, got):
        np.testing.assert_allclose(g, _reference(features, roi, 0.25, 7, 2), atol=2e-5)


def test_assign_levels_follows_the_fpn_paper_heuristic():
    sides = [224.0, 223.0, 112.0, 448.0, 10.0, 1000.0, 0.0]
    rois = tf.constant([[0.0, 0.0, s, s] for s in sides])
    # floor(4 + log2(s / 224)) clamped to [2, 5], minus 2.
    expected = [2, 1, 1, 3, 0, 3, 0]
    np.testing.assert_array_equal(roi_align.assign_levels(rois, 2, 5).numpy(), expected)
    assert math.floor(4 + math.log2(223 / 224)) == 3


def test_multilevel_roi_align_pools_each_roi_from_its_level():
    rng = np.random.default_rng(1)
    p2 = tf.constant(rng.normal(size=[2, 32, 32, 4]), tf.float32)
    p3 = tf.constant(rng.normal(size=[2, 16, 16, 4]), tf.float32)
    rois = tf.constant([[[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 120.0, 125.0]],
                        [[4.0, 4.0, 124.0, 124.0], [1.0, 2.0, 9.0, 30.0]]])
    out = roi_align.multilevel_roi_align([p2, p3], [4, 8], rois, output_size=3, canonical_size=224.0,
                                         canonical_level=4).numpy()
    # Levels k = 2 (stride 4) for the small boxes, 3 (stride 8) for the ~110 px ones.
    checks = [(p2, 0, rois[0, 0], 0.25, 0), (p3, 0, rois[0, 1], 0.125, 1),
              (p3, 1, rois[1, 0], 0.125, 2), (p2, 1, rois[1, 1], 0.25, 3)]
    for features, image, roi, scale, row in checks:
        expected = roi_align.roi_align(features, roi[None], tf.constant([image]), scale, 3, 2).numpy()[0]
        np.testing.assert_allclose(out[row], expected, atol=1e-6)
