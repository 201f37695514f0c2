"""Tiles: the grid over a photo, cutting it, the boxes a training tile keeps, and merging the passes."""
import numpy as np
import tensorflow as tf

from detkit.config import load_config
from detkit.config.tiny import tiny_model_overrides
from detkit.models import tiles
from detkit.models.build import build_detector


def test_tile_starts_step_by_the_overlap_and_end_at_the_side():
    # step = 400 * 0.75 = 300: 0, 300, then 600 = 1000 - 400 (the last tile ends at the side).
    assert tiles.tile_starts(tf.constant(1000), 400, 0.25).numpy().tolist() == [0, 300, 600]
    assert tiles.tile_starts(tf.constant(700), 400, 0.25).numpy().tolist() == [0, 300]
    assert tiles.tile_starts(tf.constant(400), 400, 0.25).numpy().tolist() == [0]
    assert tiles.tile_starts(tf.constant(250), 400, 0.25).numpy().tolist() == [0]  # smaller than a tile
    grid = tiles.tile_grid(tf.constant([700, 1000]), 400, 0.25).numpy().tolist()
    assert grid == [[0, 0], [0, 300], [0, 600], [300, 0], [300, 300], [300, 600]]


def test_cut_tiles_pads_what_lies_outside_the_image():
    image = tf.reshape(tf.range(6 * 5, dtype=tf.float32), [6, 5, 1])
    cut, sizes = tiles.cut_tiles(image, tf.constant([6, 5]), tf.constant([[0, 0], [2, 1]]), 4)
    np.testing.assert_array_equal(cut[1, :, :, 0].numpy(), image[2:6, 1:5, 0].numpy())
    assert sizes.numpy().tolist() == [[4, 4], [4, 4]]
    small, sizes = tiles.cut_tiles(image, tf.constant([6, 5]), tf.constant([[0, 0]]), 8)
    assert small.shape == (1, 8, 8, 1) and sizes.numpy().tolist() == [[6, 5]]
    assert not small[0, 6:].numpy().any() and not small[0, :, 5:].numpy().any()


def test_a_training_tile_keeps_boxes_mostly_inside_it():
    boxes = tf.constant([[10.0, 10.0, 30.0, 30.0],    # wholly inside the tile at (0, 0) of side 50
                         [40.0, 0.0, 60.0, 20.0],     # half inside: kept at min_visible 0.5, clipped
                         [45.0, 0.0, 65.0, 20.0],     # a quarter inside: dropped
                         [70.0, 70.0, 90.0, 90.0]])   # outside
    inside, keep = tiles.boxes_in_tile(boxes, tf.constant([0, 0]), tf.constant([50, 50]), 0.5)
    assert keep.numpy().tolist() == [True, True, False, False]
    np.testing.assert_allclose(inside.numpy()[1], [40, 0, 50, 20])
    # Offsets are (y, x); boxes (x1, y1, x2, y2).
    inside, keep = tiles.boxes_in_tile(boxes, tf.constant([0, 40]), tf.constant([50, 50]), 0.5)
    assert keep.numpy().tolist() == [False, True, True, False]
    np.testing.assert_allclose(inside.numpy()[1], [0, 0, 20, 20])


def test_merging_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = tf.constant([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0],
                         [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 0.0, 0.0]])
    scores = tf.constant([0.9, 0.8, 0.7, 0.6, 0.0])  # the last row is padding
    labels = tf.constant([1, 1, 2, 1, 1])
    out = tiles.merge_detections(boxes, scores, labels, 2, 0.5, 10, 10)
    n = int(out["num_detections"])
    # Class 1: 0.9 suppresses 0.8 (IoU 0.9); 0.7 is class 2; 0.6 stands apart.
    assert n == 3
    np.testing.assert_allclose(out["scores"].numpy()[:n], [0.9, 0.7, 0.6])
    assert out["labels"].numpy()[:n].tolist() == [1, 2, 1]


def test_a_tiled_model_detects_in_the_photos_own_pixels():
    cfg = load_config(overrides=tiny_model_overrides() + [
        "dataset.image.min_size=160", "dataset.image.max_size=160", "dataset.image.tiles.size=160"])
    model = build_detector(cfg, 2)
    assert model.tiling.size == 160 and model.tiling.whole_image
    out = model({"image": tf.random.uniform([2, 400, 330, 3], 0, 255), "image_hw": tf.constant([[400, 330],
                                                                                              [200, 150]])})
    for i, (h, w) in enumerate([(400, 330), (200, 150)]):
        n = int(out["num_detections"][i])
        assert n > 0
        boxes = out["boxes"].numpy()[i, :n]
        assert boxes[:, 2].max() <= w + 1e-3 and boxes[:, 3].max() <= h + 1e-3 and boxes.min() >= 0
        assert np.all(np.diff(out["scores"].numpy()[i, :n]) <= 1e-6)  # best first


def test_tile_detections_are_shifted_by_their_tiles_offset():
    """Each tile's pass finds one box at (x 5-15, y 20-40) of its own pixels: merged, they sit at the tile's
    offset (y, x) in the photo's pixels."""
    cfg = load_config(overrides=tiny_model_overrides() + [
        "dataset.image.min_size=160", "dataset.image.max_size=160", "dataset.image.tiles.size=160",
        "dataset.image.tiles.overlap=0.25"])
    model = build_detector(cfg, 2)
    total = model.detections.max_total

    def one_box_per_tile(images, image_hw):
        n = tf.shape(images)[0]
        box = tf.constant([5.0, 20.0, 15.0, 40.0])
        found = tf.cast(tf.equal(tf.reduce_max(image_hw), 160), tf.int32)  # tiles only, not the whole photo
        rows = tf.range(total)[None, :] < found
        return {"boxes": tf.where(rows[..., None], box, 0.0) * tf.ones([n, total, 4]),
                "scores": tf.where(rows, 0.5 + 0.01 * tf.cast(tf.range(n), tf.float32)[:, None], 0.0),
                "labels": tf.ones([n, total], tf.int32), "num_detections": tf.fill([n], found)}

    model._detect_resized = one_box_per_tile
    out = model._detect_tiled(tf.zeros([400, 330, 3]), tf.constant([400, 330]))
    n = int(out["num_detections"])
    # Tile starts: y 0, 120, 240 (400 = 240 + 160); x 0, 120, 170 (330 = 170 + 160); best (last tile) first.
    offsets = [(y, x) for y in (0, 120, 240) for x in (0, 120, 170)][::-1]
    expected = [[x + 5, y + 20, x + 15, y + 40] for y, x in offsets]
    assert n == 9
    np.testing.assert_allclose(out["boxes"].numpy()[:n], expected)
