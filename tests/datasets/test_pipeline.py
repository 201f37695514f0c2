"""The tf.data input pipeline on synthetic images whose pixels say where the objects are.

Every image is a PNG (lossless) that encodes its own geometry: red = original x, green = original y,
and blue = 255 exactly inside the annotated rectangles (0 elsewhere). After any resize, crop or flip
the bright-blue pixels show where each object really is, and the red channel tells which object
(the two objects of `two.png` lie left and right of x = 100) and whether the image was mirrored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPLIT = "synth"
# name -> (width, height, [(class, (xmin, ymin, xmax, ymax))]) in pixels; xmax/ymax are exclusive edges.
IMAGES = {
    "wide.png": (200, 100, [("box", (40, 20, 80, 60))]),
    "two.png": (200, 100, [("box", (20, 10, 50, 40)), ("disc", (130, 50, 180, 90))]),
    "empty.png": (120, 80, []),
}
LABELS = {"box": 1, "disc": 2}  # classes.json is sorted: ["box", "disc"]


def draw(path: Path, width: int, height: int, rects) -> None:
    """The coded image described in the module docstring."""
    a = np.zeros((height, width, 3), np.uint8)
    a[..., 0] = np.arange(width)[None, :]
    a[..., 1] = np.arange(height)[:, None]
    for x0, y0, x1, y1 in rects:
        a[y0:y1, x0:x1, 2] = 255
    Image.fromarray(a, "RGB").save(path, format="PNG")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    """`detkit dataset transform --type csv` of the three images (one of them a negative)."""
    from click.testing import CliRunner

    from detkit.cli.main import cli

    root = tmp_path_factory.mktemp("pipeline")
    (root / "images").mkdir()
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for name, (w, h, objects) in IMAGES.items():
        draw(root / "images" / name, w, h, [box for _, box in objects])
        rows += [f"{name},{w},{h},{c},{b[0]},{b[1]},{b[2]},{b[3]}" for c, b in objects] or [f"{name},{w},{h},,,,,"]
    (root / "synth.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = root / "dataset"
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(root / "synth.csv"),
                                      "--images-dir", str(root / "images"), "--output-dir", str(out),
                                      "--split", SPLIT], standalone_mode=False)
    assert result.exception is None, (result.exception, result.output)
    return str(out)


def dataset_config(dataset_dir: str, *overrides: str):
    """The DatasetConfig of the defaults plus overrides (every augmentation off unless asked for)."""
    from detkit.config import load_config

    base = [f"dataset.dir={dataset_dir}", f"dataset.split={SPLIT}", "dataset.augment.flip_horizontal=false"]
    return load_config([], base + list(overrides)).dataset


def transform_of(cfg):
    """The model's input transform for a DatasetConfig's image sizes (as build_detector makes it)."""
    from detkit.models.transform import InputTransform

    return InputTransform(cfg.image.min_size, cfg.image.max_size, cfg.image.size_rounding)


@pytest.fixture(scope="module")
def records(dataset_dir) -> dict:
    """filename -> parsed record (tensors), read once."""
    from detkit.datasets import pipeline

    return {r["filename"].numpy().decode(): r for r in pipeline.raw_records(dataset_dir, SPLIT)}


def bright_box(image: np.ndarray, label: int) -> tuple[float, float, float, float]:
    """Pixel extent (x1, y1, x2 exclusive, y2 exclusive) of the blue pixels of object `label`.

    Object 1 (class box) lies at original x < 100, object 2 (class disc) at x >= 130: the red
    channel (original x, carried along by every resize, crop and flip) tells them apart.
    """
    mask = image[..., 2] > 127
    mask &= (image[..., 0] < 100) if label == 1 else (image[..., 0] >= 100)
    ys, xs = np.nonzero(mask)
    assert len(xs), f"no bright pixels of object {label}"
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def assert_boxes_match_pixels(out: dict, tol: float = 2.0) -> None:
    """Every box of a prepared example covers the bright pixels of its object, within `tol` pixels."""
    image = out["image"].numpy()
    assert out["image_hw"].numpy().tolist() == list(image.shape[:2])
    for box, label in zip(out["boxes"].numpy(), out["labels"].numpy()):
        np.testing.assert_allclose(box, bright_box(image, int(label)), atol=tol, err_msg=f"label {label}")


def is_mirrored(image: np.ndarray) -> bool:
    """The red channel (original x) decreases from left to right."""
    return image[0, 0, 0] > image[0, -1, 0]


# ---------------------------------------------------------------- resizing (the model's transform)
@pytest.mark.parametrize("min_size, max_size, hw, box", [
    (50, 1000, [50, 100], [20, 10, 40, 30]),    # shorter side 100 -> 50: scale 0.5
    (100, 150, [75, 150], [30, 15, 60, 45]),    # shorter side would give 200 wide > 150: scale 0.75
    (100, 200, [100, 200], [40, 20, 80, 60]),   # scale 1: unchanged
    (150, 1000, [150, 300], [60, 30, 120, 90]),  # upscaling by 1.5
])
def test_resize_to_min_max_side_scales_boxes_exactly(records, dataset_dir, min_size, max_size, hw, box):
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, f"dataset.image.min_size={min_size}", f"dataset.image.max_size={max_size}")
    out = pipeline.prepare(records["wide.png"], cfg, transform_of(cfg), training=False)
    assert out["image_hw"].numpy().tolist() == hw
    assert list(out["image"].shape) == hw + [3]
    assert out["original_hw"].numpy().tolist() == [100, 200]
    np.testing.assert_allclose(out["boxes"].numpy(), [box], atol=1e-4)
    assert out["labels"].numpy().tolist() == [1]
    assert_boxes_match_pixels(out, tol=1.0)


def test_resize_scale_values():
    from detkit.models.transform import resize_scale

    assert float(resize_scale(100, 200, 50, 1000)) == pytest.approx(0.5)
    assert float(resize_scale(100, 200, 100, 150)) == pytest.approx(0.75)
    assert float(resize_scale(300, 200, 600, 1000)) == pytest.approx(3.0)  # 600/200; 900 <= 1000
    assert float(resize_scale(500, 100, 600, 1000)) == pytest.approx(2.0)  # 1000/500 caps 6.0


def test_evaluation_never_augments(records, dataset_dir):
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.flip_horizontal=true", "dataset.augment.crop_probability=1.0",
                         "dataset.augment.scale_range=[0.5, 1.5]", "dataset.augment.brightness=0.5")
    # Evaluation keeps each image's own size: the model resizes it and maps its detections back.
    outs = [pipeline.prepare(records["two.png"], cfg) for _ in range(4)]
    for out in outs:
        assert out["image_hw"].numpy().tolist() == [100, 200]
        np.testing.assert_allclose(out["boxes"].numpy(), [[20, 10, 50, 40], [130, 50, 180, 90]], atol=1e-4)
        np.testing.assert_array_equal(out["image"].numpy(), outs[0]["image"].numpy())
        assert not is_mirrored(out["image"].numpy())


# ---------------------------------------------------------------- augmentation (training path)
def test_flip_gives_both_orientations_with_boxes_on_the_object(records, dataset_dir):
    import tensorflow as tf

    from detkit.datasets import pipeline

    tf.random.set_seed(1)
    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.flip_horizontal=true")
    seen = {False: 0, True: 0}
    for _ in range(16):  # P(one orientation only) = 2 * 0.5**16
        out = pipeline.prepare(records["two.png"], cfg, transform_of(cfg), training=True)
        mirrored = bool(is_mirrored(out["image"].numpy()))
        seen[mirrored] += 1
        assert out["image_hw"].numpy().tolist() == [75, 150]
        assert out["labels"].numpy().tolist() == [1, 2]
        # Unflipped: x * 0.75; flipped: 150 - x * 0.75 with x1 and x2 swapped.
        expected = [[112.5, 7.5, 135, 30], [15, 37.5, 52.5, 67.5]] if mirrored else \
            [[15, 7.5, 37.5, 30], [97.5, 37.5, 135, 67.5]]
        np.testing.assert_allclose(out["boxes"].numpy(), expected, atol=1e-4)
        assert_boxes_match_pixels(out, tol=1.0)
    assert seen[False] > 0 and seen[True] > 0, seen


def test_random_crop_window_keeps_box_centres_and_pixels(records):
    """_random_crop on the decoded image: red/green of the crop's corner give its exact window."""
    import tensorflow as tf

    from detkit.datasets.pipeline import _random_crop

    tf.random.set_seed(2)
    image = tf.cast(tf.io.decode_image(records["two.png"]["image"], channels=3), tf.float32)
    boxes = records["two.png"]["boxes"]
    pixel_boxes = boxes.numpy() * [200, 100, 200, 100]
    np.testing.assert_allclose(pixel_boxes, [[20, 10, 50, 40], [130, 50, 180, 90]], atol=1e-4)
    sizes = set()
    for _ in range(30):
        crop, cropped = _random_crop(image, boxes, 0.3)
        crop = crop.numpy()
        h, w = crop.shape[:2]
        left, top = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        sizes.add((h, w))
        assert (int(crop[-1, -1, 0]), int(crop[-1, -1, 1])) == (left + w - 1, top + h - 1)  # a plain window
        assert 0.3 * 200 - 1 <= w <= 200 and 0.3 * 100 - 1 <= h <= 100
        for x1, y1, x2, y2 in pixel_boxes:  # every centre inside (integer rounding may cost half a pixel)
            assert left - 0.5 <= (x1 + x2) / 2 <= left + w + 0.5
            assert top - 0.5 <= (y1 + y2) / 2 <= top + h + 0.5
        expected = np.clip(pixel_boxes - [left, top, left, top], 0, [w, h, w, h])
        np.testing.assert_allclose(cropped.numpy() * [w, h, w, h], expected, atol=1e-3)
        for box, label in zip(expected, (1, 2)):  # no resampling here: exact
            np.testing.assert_allclose(bright_box(crop, label), box, atol=1e-4)
    assert len(sizes) > 5, sizes  # the window really varies


def test_crop_always_on_in_prepare_keeps_objects(records, dataset_dir):
    import tensorflow as tf

    from detkit.datasets import pipeline

    tf.random.set_seed(3)
    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=300",
                         "dataset.augment.crop_probability=1.0", "dataset.augment.crop_min_fraction=0.3",
                         "dataset.augment.flip_horizontal=true")
    lefts = set()
    for _ in range(12):
        out = pipeline.prepare(records["two.png"], cfg, transform_of(cfg), training=True)
        image = out["image"].numpy()
        h, w = out["image_hw"].numpy()
        assert min(h, w) == 100 or max(h, w) == 300  # resized after the crop
        assert out["labels"].numpy().tolist() == [1, 2]  # both centres kept, so both boxes survive
        assert_boxes_match_pixels(out, tol=2.0)
        lefts.add(round(float(image[:, :, 0].min())))
        # Each object keeps at least half of its width and height (its centre is inside).
        scale_x = w / (image[0, :, 0].max() - image[0, :, 0].min() + 1)
        for box, (ow, oh) in zip(out["boxes"].numpy(), [(30, 30), (50, 40)]):
            assert box[2] - box[0] >= ow / 2 * scale_x - 2
    assert len(lefts) > 1, lefts


def test_crop_of_negative_image_and_negatives_pass_through(records, dataset_dir):
    import tensorflow as tf

    from detkit.datasets import pipeline

    tf.random.set_seed(4)
    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.crop_probability=1.0", "dataset.augment.flip_horizontal=true",
                         "dataset.augment.scale_range=[0.9, 1.1]")
    for training in (False, True):
        out = pipeline.prepare(records["empty.png"], cfg, transform_of(cfg) if training else None, training=training)
        assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
        assert out["difficult"].shape == (0,) and out["is_crowd"].shape == (0,)
        assert out["original_hw"].numpy().tolist() == [80, 120]
        assert out["filename"].numpy() == b"empty.png"
        if not training:  # evaluation: the image's own size
            assert out["image_hw"].numpy().tolist() == [80, 120]
        assert not (out["image"].numpy()[..., 2] > 127).any()


def test_scale_range_jitter(records, dataset_dir):
    import tensorflow as tf

    from detkit.datasets import pipeline

    tf.random.set_seed(5)
    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.scale_range=[0.5, 1.5]")
    sizes = set()
    for _ in range(12):
        out = pipeline.prepare(records["wide.png"], cfg, transform_of(cfg), training=True)
        h, w = out["image_hw"].numpy().tolist()
        sizes.add((h, w))
        # base scale 0.75, times [0.5, 1.5]: 200 x 100 -> between 75 x 37.5 and 225 x 112.5
        assert 75 <= w <= 225 and 37 <= h <= 113 and abs(w - 2 * h) <= 1
        np.testing.assert_allclose(out["boxes"].numpy(), [[0.2 * w, 0.2 * h, 0.4 * w, 0.6 * h]], atol=1e-3)
        assert_boxes_match_pixels(out, tol=2.0)
    assert len(sizes) >= 4, sizes


def test_fixed_scale_range_is_applied(records, dataset_dir):
    """scale_range [0.8, 0.8] means always 0.8 (only [1, 1] is 'off')."""
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.scale_range=[0.8, 0.8]")
    out = pipeline.prepare(records["wide.png"], cfg, transform_of(cfg), training=True)
    assert out["image_hw"].numpy().tolist() == [60, 120]  # 0.75 * 0.8 = 0.6
    np.testing.assert_allclose(out["boxes"].numpy(), [[24, 12, 48, 36]], atol=1e-3)
    out = pipeline.prepare(records["wide.png"], cfg, transform_of(cfg), training=False)
    assert out["image_hw"].numpy().tolist() == [75, 150]  # only training jitters


# ---------------------------------------------------------------- batching
def test_evaluation_batches_are_ordered_and_padded(dataset_dir):
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150")
    batches = list(pipeline.evaluation_dataset(cfg, dataset_dir, SPLIT, batch_size=2).as_numpy_iterator())
    assert [b["filename"].tolist() for b in batches] == [[b"wide.png", b"two.png"], [b"empty.png"]]
    first, last = batches
    assert first["image"].shape == (2, 100, 200, 3)  # each image at its own size: the model resizes
    assert first["labels"].tolist() == [[1, -1], [1, 2]]  # wide has one box: its second slot is padding
    np.testing.assert_allclose(first["boxes"][0], [[40, 20, 80, 60], [0, 0, 0, 0]], atol=1e-4)
    assert first["difficult"].tolist() == [[False, False], [False, False]]
    assert last["image"].shape == (1, 80, 120, 3)
    assert last["labels"].shape == (1, 0) and last["boxes"].shape == (1, 0, 4)  # nothing to pad
    assert last["image_hw"].tolist() == [[80, 120]]

    (one,) = list(pipeline.evaluation_dataset(cfg, dataset_dir, SPLIT, batch_size=3).as_numpy_iterator())
    assert one["image"].shape == (3, 100, 200, 3)
    assert one["image_hw"].tolist() == [[100, 200], [100, 200], [80, 120]]
    assert one["labels"].tolist() == [[1, -1], [1, 2], [-1, -1]]
    assert one["original_hw"].tolist() == [[100, 200], [100, 200], [80, 120]]
    assert not one["image"][2, 80:].any() and not one["image"][2, :, 120:].any()  # image padding is 0


def test_training_batches_pad_labels_with_minus_one(dataset_dir):
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, "dataset.image.min_size=100", "dataset.image.max_size=150",
                         "dataset.augment.flip_horizontal=true", "dataset.augment.crop_probability=0.5",
                         "dataset.shuffle_buffer=8")
    ds = pipeline.training_dataset(cfg, transform_of(cfg), batch_size=3, seed=7)
    assert ds.element_spec["image"].shape.as_list() == [3, None, None, 3]  # drop_remainder: static batch
    expected_boxes = {b"wide.png": 1, b"two.png": 2, b"empty.png": 0}
    names = set()
    for batch in ds.take(6).as_numpy_iterator():  # endless: repeats past the 3 images
        width = batch["labels"].shape[1]
        assert width == max(expected_boxes[f] for f in batch["filename"])
        for name, labels, boxes, hw in zip(batch["filename"], batch["labels"], batch["boxes"], batch["image_hw"]):
            names.add(name)
            n = expected_boxes[name]
            assert (labels[:n] > 0).all() and (labels[n:] == -1).all()
            assert not boxes[n:].any()
            assert (boxes[:n, 2] <= hw[1] + 1e-3).all() and (boxes[:n, 3] <= hw[0] + 1e-3).all()
    assert names == set(expected_boxes)


def test_class_repeat_factors_by_hand():
    from detkit.datasets.sampling import class_repeat_factors

    # f = 1, 0.25, 0.01, 0 with t = 0.25: 1, 1, sqrt(25) = 5, and 1 for a class in no image.
    np.testing.assert_allclose(class_repeat_factors([1.0, 0.25, 0.01, 0.0], 0.25), [1.0, 1.0, 5.0, 1.0])


def test_repeat_factor_sampling_repeats_images_of_rare_classes(dataset_dir):
    import tensorflow as tf

    from detkit.datasets import pipeline, sampling

    # box is in 2 of 3 images, disc in 1: with t = 4/3, r_box = sqrt(2), r_disc = 2; two.png holds both -> 2.
    factors = pipeline._class_repeat_factors([(dataset_dir, SPLIT)], 4.0 / 3.0)
    np.testing.assert_allclose(factors, [np.sqrt(2.0), 2.0], rtol=1e-6)
    tf.random.set_seed(3)
    epochs = 400
    ds = sampling.repeat_by_factor(pipeline.raw_records(dataset_dir, SPLIT).repeat(epochs), factors)
    counts: dict = {}
    for r in ds:
        name = r["filename"].numpy().decode()
        counts[name] = counts.get(name, 0) + 1
    assert counts["two.png"] == 2 * epochs and counts["empty.png"] == epochs
    # floor(1.414) + Bernoulli(0.414): mean 1.414 per epoch; 400 epochs keep it within +-0.1 (> 4 sigma).
    assert abs(counts["wide.png"] / epochs - np.sqrt(2.0)) < 0.1


def test_training_dataset_with_repeat_factor_sampling_runs(dataset_dir):
    from detkit.datasets import pipeline

    cfg = dataset_config(dataset_dir, "dataset.repeat_factor_threshold=1.0", "dataset.shuffle_buffer=0")
    batch = next(iter(pipeline.training_dataset(cfg, transform_of(cfg), batch_size=2, seed=0)))
    assert batch["image"].shape[0] == 2


def test_training_tiles_are_crops_at_the_photos_own_resolution(records, dataset_dir):
    """With dataset.image.tiles.size, a training image is a random tile of the photo (not resized), with the
    boxes that keep at least min_visible of their area in it."""
    import tensorflow as tf

    from detkit.datasets import pipeline

    tf.random.set_seed(7)
    cfg = dataset_config(dataset_dir, "dataset.image.min_size=60", "dataset.image.max_size=60",
                         "dataset.image.tiles.size=60", "dataset.image.tiles.min_visible=0.5")
    seen_boxes = set()
    for _ in range(12):
        out = pipeline.prepare(records["wide.png"], cfg, transform_of(cfg), training=True)
        assert out["image_hw"].numpy().tolist() == [60, 60]  # a 60-pixel tile of the 100x200 photo, as it is
        boxes = out["boxes"].numpy()
        seen_boxes.add(len(boxes))
        # wide.png's one box is (40, 20, 80, 60) in its pixels: 40 x 40.
        for box in boxes:
            assert (box >= -1e-4).all() and box[2] <= 60 + 1e-4 and box[3] <= 60 + 1e-4
            assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.5 * 40 * 40 - 1e-2
    assert seen_boxes == {0, 1}  # some tiles hold the box, some do not
