import numpy as np
import tensorflow as tf

from detkit.models import anchors


def test_base_anchors_keep_area_per_size():
    base = anchors.base_anchors([16.0], [0.5, 1.0, 2.0])
    # ratio = h / w with w * h = 16^2: w = 16 / sqrt(r), h = 16 * sqrt(r).
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    np.testing.assert_allclose(w * h, [256.0] * 3, rtol=1e-5)
    np.testing.assert_allclose(h / w, [0.5, 1.0, 2.0], rtol=1e-5)
    np.testing.assert_allclose(base[1], [-8, -8, 8, 8])


def test_anchors_for_2x2_feature_map():
    gen = anchors.AnchorGenerator(((8.0, 16.0),), (1.0,), (16,), "centered")
    (out,) = [a.numpy() for a in gen([[2, 2]], tf.constant([40, 40]))]
    # 2x2 points x 2 anchors, row-major, centres at (8, 8), (24, 8), (8, 24), (24, 24).
    expected = np.array([
        [4, 4, 12, 12], [0, 0, 16, 16],
        [20, 4, 28, 12], [16, 0, 32, 16],
        [4, 20, 12, 28], [0, 16, 16, 32],
        [20, 20, 28, 28], [16, 16, 32, 32],
    ], dtype=np.float32)
    np.testing.assert_allclose(out, expected)


def test_anchor_count_matches_head_layout():
    gen = anchors.AnchorGenerator(((64, 128, 256),), (0.5, 1, 2), (16,))
    (out,) = gen([[3, 5]], tf.constant([48, 80]))
    assert out.shape == (3 * 5 * 9, 4) and gen.num_per_location == 9
    assert anchors.num_anchors_per_location([64, 128, 256], [0.5, 1, 2]) == 9
