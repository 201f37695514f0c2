import numpy as np
import tensorflow as tf

from detkit.models import fpn


def test_upsample_nearest_doubles_rows_and_columns():
    x = tf.reshape(tf.range(6, dtype=tf.float32), [1, 2, 3, 1])
    out = fpn.upsample_nearest(x, tf.constant([4, 6]))[0, ..., 0].numpy()
    np.testing.assert_array_equal(out, [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                        [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])


def test_upsample_nearest_to_an_odd_size_floors_the_source_index():
    # 3 -> 5 rows: source = floor(i * 3 / 5) = 0, 0, 1, 1, 2 (torch's F.interpolate nearest).
    x = tf.reshape(tf.constant([10.0, 20.0, 30.0]), [1, 3, 1, 1])
    out = fpn.upsample_nearest(x, tf.constant([5, 1]))[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(out, [10, 10, 20, 20, 30])


def test_last_level_max_pool_takes_every_second_pixel():
    x = tf.reshape(tf.range(25, dtype=tf.float32), [1, 5, 5, 1])
    out = fpn.last_level_max_pool(x)[0, ..., 0].numpy()
    np.testing.assert_array_equal(out, [[0, 2, 4], [10, 12, 14], [20, 22, 24]])


def test_fpn_top_down_sum_with_identity_convs():
    layer = fpn.FPN(1, 2)
    c2 = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
    c3 = tf.constant([[100.0, 200.0], [300.0, 400.0]])[None, :, :, None]
    layer([c2, c3])
    centre = np.zeros([3, 3, 1, 1], np.float32)
    centre[1, 1] = 1.0
    for i in range(2):
        layer.inner_blocks[i].kernel.assign(np.ones([1, 1, 1, 1], np.float32))
        layer.layer_blocks[i].kernel.assign(centre)
    layer.layer_blocks[0].bias.assign([0.5])
    p2, p3, p4 = (t[0, ..., 0].numpy() for t in layer([c2, c3]))
    np.testing.assert_array_equal(p3, [[100, 200], [300, 400]])
    expected_p2 = np.arange(16).reshape(4, 4) + np.kron([[100, 200], [300, 400]], np.ones([2, 2])) + 0.5
    np.testing.assert_array_equal(p2, expected_p2)
    np.testing.assert_array_equal(p4, [[100]])

