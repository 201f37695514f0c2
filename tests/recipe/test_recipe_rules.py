"""Statistics -> recipe rules on small synthetic splits, with the expected values computed by hand."""
from __future__ import annotations


import numpy as np
import pytest

from detkit.datasets.statistics import from_records
from detkit.recipe.rules import (CANDIDATES, ModelChoice, RecipeOptions, choose_schedule, class_weights,
                                 make_recipe, weighted_quantile)


def record(width: int, height: int, boxes: list[tuple[float, float, float, float]], labels: list[int]) -> dict:
    """A parsed record as tfrecord.parse_example gives it (normalised boxes), without the image."""
    norm = [(x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1 in boxes]
    return {"width": width, "height": height, "boxes": np.asarray(norm, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64), "difficult": np.zeros(len(labels), np.int64),
            "is_crowd": np.zeros(len(labels), np.int64), "format": b"jpeg"}


def stats(records: list[dict], classes: list[str]):
    return from_records(records, classes)


def values(recipe) -> dict:
    return recipe.values()


def reasons(recipe) -> dict:
    return {c.name: c.reason for c in recipe.choices}


def test_statistics_of_records():
    st = stats([record(100, 50, [(10, 10, 30, 20), (0, 0, 100, 50)], [1, 2]),
                record(200, 100, [(50, 50, 150, 100)], [1]),
                record(60, 40, [], [])], ["cat", "dog"])
    assert st.num_images == 3 and st.num_boxes == 3
    np.testing.assert_allclose(st.box_width, [20, 100, 100], atol=1e-4)
    np.testing.assert_allclose(st.box_height, [10, 50, 50], atol=1e-4)
    assert st.boxes_per_image.tolist() == [2, 1, 0]
    assert st.class_box_counts().tolist() == [2, 1]
    assert st.class_image_counts().tolist() == [2, 1]
    np.testing.assert_allclose(st.class_image_fraction(), [2 / 3, 1 / 3])
    # 100x50 to (min 320, max 320): the longer side decides, 3.2.
    np.testing.assert_allclose(st.resize_scales(320, 320), [3.2, 1.6, 320 / 60])


def test_weighted_quantile_counts_every_class_alike():
    values_ = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    labels = np.array([1, 1, 1, 1, 2])
    w = class_weights(labels, 2)
    np.testing.assert_allclose(w, [0.25, 0.25, 0.25, 0.25, 1.0])
    # Class 2's one box holds half the weight: the median is the largest of class 1's boxes.
    assert weighted_quantile(values_, w, 0.5) == 4.0
    assert weighted_quantile(values_, w, 0.51) == 100.0
    assert weighted_quantile(values_, np.ones(5), 0.1) == 1.0


def test_one_large_object_per_photo_gives_the_raccoon_like_recipe():
    # 500x375 photos (4:3), one box each; sqrt(w*h) after the 320/500 = 0.64 resize: 96, 156.8, 175.3, 221.7 px.
    boxes = [(0, 0, 150, 150), (10, 10, 210, 310), (0, 0, 300, 250), (50, 50, 450, 350)]
    st = stats([record(500, 375, [b], [1]) for b in boxes], ["raccoon"])
    r = make_recipe(st)
    v = values(r)
    # Short side / long side: 0.3, 0.4, 0.5, 0.6; 24 px needs a side of 80 at most: the smallest input, 320, where
    # the single-level model is the cheapest of those that resolve them.
    assert (v["dataset.image.min_size"], v["dataset.image.max_size"]) == (320, 320)
    assert v["model.architecture"] == "single_level" and "model.fpn.body_strides" not in v
    # 2nd percentile 99.6 px -> 64 (octave at or below), 98th 218.9 px -> 256 (nearest octave, log2 = 7.77).
    assert v["model.anchors.sizes"] == [64.0, 128.0, 256.0]
    assert v["model.anchors.ratios"] == [0.5, 1.0, 2.0]
    assert v["model.rcnn.target.minibatch_size"] == 64 and v["model.rpn.target.minibatch_size"] == 256
    assert v["model.rpn.train_proposals.post_nms_top_n"] == 300 and v["model.rpn.train_proposals.pre_nms_top_n"] == 2000
    assert v["model.rpn.test_proposals.post_nms_top_n"] == 100 and v["model.rpn.test_proposals.pre_nms_top_n"] == 1000
    assert v["model.postprocess.max_total"] == 100 and v["model.postprocess.max_per_class"] == 100
    assert v["dataset.repeat_factor_threshold"] == 0.0
    assert "one class" in reasons(r)["class balance"]
    assert r.notes == []


def test_small_dense_objects_give_a_bigger_input_smaller_anchors_and_more_detections():
    # 640x480, 60 boxes of 30x30 px per image: short side 30 / 640 = 0.046875 of the longer side.
    grid = [(x, y, x + 30, y + 30) for x in range(0, 600, 60) for y in range(0, 360, 60)]
    assert len(grid) == 60
    st = stats([record(640, 480, grid, [1] * 60) for _ in range(5)], ["cell"])
    r = make_recipe(st, RecipeOptions(architecture="single_level"))
    v = values(r)
    # 24 / 0.046875 = 512, within the 640x480 budget (side <= 640 at 4:3).
    assert v["dataset.image.max_size"] == 512 and v["dataset.image.min_size"] == 512
    assert "24 px" in reasons(r)["model and input size"]
    # Boxes become 30 * 0.8 = 24 px: anchors 16 (floor of log2 24) to 32 (nearest octave).
    assert v["model.anchors.sizes"] == [16.0, 32.0]
    # 60 boxes per image: 16 * 60 = 960 -> capped at 256 sampled RoIs (CPU) and 512 anchors; proposals 2 x 256.
    assert v["model.rcnn.target.minibatch_size"] == 256 and v["model.rpn.target.minibatch_size"] == 512
    assert v["model.rpn.train_proposals.post_nms_top_n"] == 512 and v["model.rpn.train_proposals.pre_nms_top_n"] == 2048
    assert v["model.rpn.test_proposals.post_nms_top_n"] == 600 and v["model.rpn.test_proposals.pre_nms_top_n"] == 3000
    # At least twice the 60 boxes, rounded up to 50.
    assert v["model.postprocess.max_total"] == 150 and v["model.postprocess.max_per_class"] == 150


def test_small_objects_choose_the_cheapest_model_that_resolves_them():
    """Upscaling buys resolution and costs epochs: the single-level model wants 512 px for 30-px cells in
    640-px photos (512^2 = 262k px), the stride-8 pyramid 320 px (102k px x 1.3 = 133k): the pyramid wins."""
    grid = [(x, y, x + 30, y + 30) for x in range(0, 600, 60) for y in range(0, 360, 60)]
    st = stats([record(640, 480, grid, [1] * 60) for _ in range(5)], ["cell"])
    r = make_recipe(st)
    v = values(r)
    # 12 / 0.046875 = 256 -> the smallest input, 320; the stride-8 map resolves 12 px, the boxes are 15 px.
    assert v["model.architecture"] == "fpn" and v["model.fpn.body_strides"] == [8, 16]
    assert v["dataset.image.max_size"] == 320 and v["model.fpn.channels"] == 64
    # Boxes become 15 px: one anchor size per level from 16 (twice the finest stride): 16, 32, 64.
    assert v["model.fpn.anchor_sizes"] == [[16.0], [32.0], [64.0]] and "model.anchors.sizes" not in v
    assert "stride 8" in reasons(r)["model and input size"] and "3 levels" in reasons(r)["anchors"]


def test_tiny_objects_are_capped_by_the_cpu_budget():
    st = stats([record(640, 480, [(0, 0, 4, 4), (100, 100, 104, 106)], [1, 1]) for _ in range(3)], ["dot"])
    r = make_recipe(st)
    # 4 / 640 of the side: even stride 4 wants 6 / (4 / 640) = 960; sqrt(640*480 / 0.75) = 640 is the budget,
    # and the photos are no larger than it: the finest model at the budget's side.
    v = values(r)
    assert v["dataset.image.max_size"] == 640 and v["model.fpn.body_strides"] == [4, 8, 16]
    assert "CPU budget" in reasons(r)["model and input size"] and "dataset.image.tiles.size" not in v


def test_large_photos_with_small_objects_are_cut_into_tiles_at_their_own_resolution():
    # 2400x1800 photos with 16-px objects: 16 / 2400 of the side; no model resolves them at 640.
    boxes = [(x, y, x + 16, y + 16) for x in range(100, 2300, 300) for y in range(100, 1700, 300)]
    st = stats([record(2400, 1800, boxes, [1] * len(boxes)) for _ in range(3)], ["bird"])
    r = make_recipe(st)
    v = values(r)
    # At their own resolution they are 16 px: the stride-8 pyramid resolves 12, on 640-px tiles.
    assert v["dataset.image.tiles.size"] == 640 and v["dataset.image.max_size"] == 640
    assert v["model.fpn.body_strides"] == [8, 16] and v["dataset.augment.crop_probability"] == 0.0
    assert "tiles" in reasons(r)["model and input size"]
    # A training image is one 640x640 tile: 409.6k px x 1.3 per step.
    assert "410k px x 1.3" in reasons(r)["schedule"]


def test_tiled_photos_get_anchors_for_their_boxes_at_their_own_resolution():
    # 4000x3000 photos: 40 16-px birds and four 256-px kites each. Resized to 640 a kite would be 41 px; in the
    # tiles (the photo's own pixels) it is 256.
    birds = [(x, y, x + 16, y + 16) for x in range(100, 3900, 500) for y in range(100, 2900, 600)]
    kites = [(x, 1000, x + 256, 1256) for x in (300, 1300, 2300, 3300)]
    st = stats([record(4000, 3000, birds + kites, [1] * len(birds) + [2] * 4) for _ in range(3)], ["bird", "kite"])
    r = make_recipe(st)
    v = values(r)
    assert v["dataset.image.tiles.size"] == 640
    # sqrt(w*h): 2nd percentile 16, 98th 256 -> one level per octave from 16 (twice the stride-8 map), 3 levels.
    assert v["model.fpn.anchor_sizes"] == [[16.0], [32.0], [64.0]]
    why = reasons(r)["anchors"]
    assert "boxes in the tiles (the photos' own resolution) are 16-256 px" in why
    assert "boxes above 91 px have no anchor within half an octave" in why


def test_tall_boxes_widen_the_ratios():
    st = stats([record(400, 400, [(0, 0, 20, 80), (50, 0, 70, 80)], [1, 1]) for _ in range(4)], ["pole"])
    # h/w = 4 everywhere: log2 = 2 -> ratios 0.5 ... 4.
    assert values(make_recipe(st))["model.anchors.ratios"] == [0.5, 1.0, 2.0, 4.0]


def test_imbalanced_classes_turn_on_repeat_factor_sampling():
    # 16 images: class a in all, b in 8, c in 1 -> f = 1, 0.5, 0.0625; 16x apart.
    recs = []
    for i in range(16):
        labels = [1] + ([2] if i < 8 else []) + ([3] if i == 0 else [])
        recs.append(record(320, 240, [(10 + 20 * j, 10, 60 + 20 * j, 60) for j in range(len(labels))], labels))
    r = make_recipe(stats(recs, ["a", "b", "c"]))
    # t = median(1, 0.5, 0.0625) = 0.5; r_c = sqrt(0.5 / 0.0625) = 2.83.
    assert values(r)["dataset.repeat_factor_threshold"] == 0.5
    why = reasons(r)["class balance"]
    assert "'c' repeated 2.83x" in why and "16.0x fewer images" in why


def test_balanced_classes_do_not_resample():
    recs = [record(320, 240, [(10, 10, 60, 60)], [1 if i % 2 else 2]) for i in range(10)]
    r = make_recipe(stats(recs, ["a", "b"]))
    assert values(r)["dataset.repeat_factor_threshold"] == 0.0
    assert "1.0x fewer" in reasons(r)["class balance"]


def test_schedule_fits_the_budget_at_the_estimated_or_measured_speed():
    st = stats([record(320, 240, [(10, 10, 60, 60)], [1]) for _ in range(100)], ["a"])
    # 320x240 = 76.8k px at side 320 and 64 RoIs: 76800 / 1.7e6 + 64 * 0.0003 = 0.064376 s per image, 15.534
    # images/s; 10 min -> 600 * 15.534 / 4 = 2330 steps; warm-up 3% of them, 69.
    c = choose_schedule(st, 320, 64, RecipeOptions(minutes=10))
    assert c.values == {"train.max_minutes": 10, "train.num_steps": 4 * 2330, "train.learning_rate.warmup_steps": 69}
    # The stride-8 pyramid costs 1.3x per pixel: 76800 * 1.3 / 1.7e6 + 0.0192 = 0.077929 s, 12.832 images/s.
    c = choose_schedule(st, 320, 64, RecipeOptions(minutes=10), ModelChoice(CANDIDATES[1], 320))
    assert c.values["train.num_steps"] == 4 * 1924
    c = choose_schedule(st, 320, 64, RecipeOptions(minutes=10, images_per_second=8.0))
    assert c.values == {"train.max_minutes": 10, "train.num_steps": 4 * 1200, "train.learning_rate.warmup_steps": 36}
    assert "measured" in c.reason
    c = choose_schedule(st, 320, 64, RecipeOptions())
    assert c.values["train.max_minutes"] == 15.0 and "no budget given" in c.reason


def wide_scale_split():
    # 16 px and 300 px boxes in 640x480 images (4 images): sizes span 300 / 16 = 18.75x.
    return stats([record(640, 480, [(0, 0, 16, 16), (300, 100, 600, 400)], [1, 1]) for _ in range(4)], ["x"])


def test_a_chosen_single_level_model_keeps_one_level():
    r = make_recipe(wide_scale_split(), RecipeOptions(architecture="single_level"))
    v = values(r)
    assert v["model.architecture"] == "single_level" and "model.fpn.anchor_sizes" not in v
    # 10% of boxes are 16 / 640 of the longer side: 24 px wants 960, the 640x480 budget caps the side at 640 (x1).
    assert v["dataset.image.max_size"] == 640
    # 2nd percentile 16 px -> 16; 98th 300 px -> 256 (log2 300 = 8.23).
    assert v["model.anchors.sizes"] == [16.0, 32.0, 64.0, 128.0, 256.0]


def test_a_chosen_pyramid_gets_one_anchor_size_per_level_and_per_level_proposals():
    r = make_recipe(wide_scale_split(), RecipeOptions(architecture="fpn", body_strides=(4, 8, 16)))
    v = values(r)
    # The user's pyramid (small_resnet's 3 maps + the pooled level): from 8 px (twice stride 4), one octave per level.
    assert v["model.fpn.anchor_sizes"] == [[8.0], [16.0], [32.0], [64.0]]
    assert "model.anchors.sizes" not in v and v["model.anchors.ratios"] == [0.5, 1.0, 2.0]
    # 2 boxes per image: 64 RoIs, 300 / 100 proposals after NMS as for one level; before NMS the single level's
    # 2000 / 1000 in total are split over 4 levels: 500 and 250 -> 300 (rounded up to 100) per level.
    assert v["model.rpn.train_proposals.post_nms_top_n"] == 300 and v["model.rpn.test_proposals.post_nms_top_n"] == 100
    assert v["model.rpn.train_proposals.pre_nms_top_n"] == 500 and v["model.rpn.test_proposals.pre_nms_top_n"] == 300
    assert "per level" in reasons(r)["proposals"] and "4 levels" in reasons(r)["anchors"]
    # A chosen body (resnet50_tv's 4 maps + the pooled level): only its input size (stride 4 resolves the 16 / 640
    # boxes at the smallest input, 320, where they are 8 px) and anchors from twice stride 4.
    v = values(make_recipe(wide_scale_split(), RecipeOptions(from_scratch=False, architecture="fpn",
                                                             body_strides=(4, 8, 16, 32))))
    assert v["model.fpn.anchor_sizes"] == [[8.0], [16.0], [32.0], [64.0], [128.0]]
    assert "model.architecture" not in v and v["dataset.image.max_size"] == 320
    assert v["model.rpn.train_proposals.pre_nms_top_n"] == 400 and v["model.rpn.test_proposals.pre_nms_top_n"] == 200


def test_fixed_shapes_choose_no_input_size_nor_anchors_and_schedule_at_the_given_side():
    r = make_recipe(wide_scale_split(), RecipeOptions(from_scratch=False, shapes=False, side=320, minutes=10))
    assert [c.name for c in r.choices] == ["samples", "proposals", "detections", "class balance", "schedule"]
    assert not [k for k in values(r) if k.startswith(("dataset.image", "model.anchors", "model.fpn", "model.base"))]
    # 640x480 at side 320: 320x240 = 76.8k px and 64 RoIs: 15.534 images/s as in the schedule test: 2330 steps.
    assert values(r)["train.num_steps"] == 4 * 2330


def test_no_boxes_is_refused():
    with pytest.raises(ValueError, match="no boxes"):
        make_recipe(stats([record(100, 100, [], [])], ["a"]))
