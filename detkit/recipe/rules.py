"""Pure rules: a training split's statistics -> config values, each with a one-line reason.

Every rule reads the boxes as the network will see them (after the input resize) and works for any dataset;
the constants below are the only tuning, each explained where it is defined.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from detkit.datasets.sampling import class_repeat_factors
from detkit.datasets.statistics import SplitStatistics, resize_scales

STRIDE = 16
# Objects shorter than this after the resize fall between the cells of stride-16 features (one cell and a half).
MIN_OBJECT_PX = 24
# The share of each class's boxes allowed below MIN_OBJECT_PX ("the small objects that matter" start above it).
SMALL_QUANTILE = 0.10
# Input side (the longer side after resize): at least this (the from-scratch backbone needs context), step 32.
MIN_SIDE, SIDE_STEP = 320, 32
# CPU budget: pixels per resized image. At 640x480, small_resnet trains ~4 images/s on 2 cores.
PIXEL_BUDGET = 640 * 480
# Training cost of the from-scratch model on 2 cores: seconds per image = pixels / TRAIN_PIXELS_PER_SECOND + sampled
# RoIs x ROI_SECONDS. Fitted to 16 images/s at ~320x240 with 64 RoIs (examples/README.md) and to the slow-down of
# 512 RoIs at 480x360 (benchmarks/train_recipe.py on bccd, same machine): an estimate, the schedule follows the clock.
TRAIN_PIXELS_PER_SECOND = 1.7e6
ROI_SECONDS = 0.0003
# Sampled RoIs per image: at most this many on a CPU (the head's cost grows with them; Faster R-CNN used 128).
MAX_RCNN_SAMPLES = 256
# Class imbalance (image frequency of the most over the least frequent class) that turns repeat factor sampling on.
IMBALANCE_RATIO = 4.0
# Box scale range (98th over 2nd percentile of sqrt(w*h)) from which one stride-16 level serves the data poorly.
FPN_SCALE_RANGE = 8.0
DEFAULT_MINUTES = 15.0
BATCH_SIZE = 4

# The from-scratch CPU backbone and its training (the recipe of examples/raccoon.yml): applied together, and only
# when the user chose neither model.base_network.name nor .weights: a chosen (e.g. pretrained) backbone calls for
# its own settings. The user's own keys among these still win one by one.
FROM_SCRATCH: dict[str, Any] = {
    "model.base_network.name": "small_resnet",
    "model.base_network.weights": "none",
    "model.base_network.freeze_batchnorm": False,
    "model.base_network.small_widths": [16, 32, 64, 128],
    "model.base_network.small_blocks": [0, 1, 2, 2],
    "model.rpn.channels": 128,
    "model.rcnn.fc_sizes": [256],
    "model.rcnn.reduce_channels": 0,
    "model.loss_weights.l2": 0.0001,
    "dataset.augment.flip_horizontal": True,
    "dataset.augment.scale_range": [0.8, 1.2],
    "dataset.augment.crop_probability": 0.5,
    "dataset.augment.crop_min_fraction": 0.6,
    "dataset.augment.brightness": 0.1,
    "dataset.augment.contrast": 0.1,
    "train.batch_size": BATCH_SIZE,
    "train.optimizer.type": "adam",
    "train.optimizer.clip_norm": 10.0,
    "train.learning_rate.schedule": "cosine",
    "train.learning_rate.base": 0.002,
    "train.learning_rate.final_fraction": 0.02,
}


@dataclass
class Choice:
    """Config values chosen together, and why."""

    name: str
    values: dict[str, Any]
    reason: str


@dataclass
class Recipe:
    """The choices, in the order they were made, and notes on what the data suggests but the recipe leaves."""

    choices: list[Choice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """Every chosen dotted key -> value."""
        return {k: v for c in self.choices for k, v in c.values.items()}


@dataclass
class RecipeOptions:
    """What the rules cannot read from the data."""

    minutes: Optional[float] = None          # time budget; None = DEFAULT_MINUTES
    images_per_second: Optional[float] = None  # measured training speed; None = estimated from the pixel count
    from_scratch: bool = True                # apply FROM_SCRATCH (False when the user chose a backbone)
    fpn_levels: int = 0                      # pyramid levels of the fpn model; 0 = the single-level model
    shapes: bool = True                      # choose input size and anchors (False when weights fix the model)
    side: int = 0                            # the input side when `shapes` is False (for the schedule's estimate)
    schedule: bool = True                    # choose steps and schedule (False when the user bounded the run)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of values with weights (the smallest value whose cumulative weight reaches q)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cum, q * cum[-1] - 1e-12)), len(values) - 1)])


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[B] 1 / (boxes of the box's class): every class weighs the same, as in mAP."""
    counts = np.bincount(labels - 1, minlength=num_classes).astype(np.float64)
    return 1.0 / np.maximum(counts[labels - 1], 1.0)


def _round_up(value: float, step: int) -> int:
    """value rounded up to a multiple of step."""
    return int(math.ceil(value / step - 1e-9) * step)


def _pow2_ceil(value: float) -> int:
    """The smallest power of two >= value."""
    return 1 << max(0, math.ceil(math.log2(max(value, 1.0))))


def choose_input_size(st: SplitStatistics) -> tuple[int, Choice]:
    """The longer side of the resized image (min_size = max_size = side)."""
    long_side = np.maximum(st.image_width, st.image_height)
    aspect = float(np.median(np.minimum(st.image_width, st.image_height) / np.maximum(long_side, 1.0)))
    budget_side = max(MIN_SIDE, int(math.sqrt(PIXEL_BUDGET / max(aspect, 1e-3)) // SIDE_STEP * SIDE_STEP))
    short_rel = np.minimum(st.box_width, st.box_height) / long_side[st.box_image]
    small = weighted_quantile(short_rel, class_weights(st.box_label, len(st.classes)), SMALL_QUANTILE)
    wanted = MIN_OBJECT_PX / max(small, 1e-6)
    side = min(max(MIN_SIDE, _round_up(wanted, SIDE_STEP)), budget_side)
    pct = round(SMALL_QUANTILE * 100)
    why = (f"{pct}% of each class's boxes are shorter than {small:.3g} of the image's longer side; at {side} px that "
           f"is {small * side:.0f} px")
    if wanted > budget_side:
        why += (f" (under the {MIN_OBJECT_PX} px stride-16 features need: the CPU budget of "
                f"{PIXEL_BUDGET // 1000}k px/image caps the side)")
    elif side == MIN_SIDE and wanted < MIN_SIDE:
        why += f" (>= {MIN_OBJECT_PX} px already at the smallest input, {MIN_SIDE})"
    else:
        why += f" (>= {MIN_OBJECT_PX} px, what stride-16 features resolve)"
    return side, Choice("input size", {"dataset.image.min_size": side, "dataset.image.max_size": side}, why)


def resized_boxes(st: SplitStatistics, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Box widths and heights in pixels after resizing every image to `side`."""
    scale = resize_scales(st.image_height, st.image_width, side, side)[st.box_image]
    return st.box_width * scale, st.box_height * scale


def choose_anchors(st: SplitStatistics, side: int) -> tuple[float, Choice]:
    """Anchor sizes one octave apart covering the 2nd-98th percentile of sqrt(w*h), and ratios covering h/w.

    Returns (98th / 2nd percentile of the box sizes, the choice).
    """
    w, h = resized_boxes(st, side)
    keep = (w > 0) & (h > 0)
    w, h = w[keep], h[keep]
    size = np.sqrt(w * h)
    lo, hi = np.quantile(size, [0.02, 0.98])
    k_lo = max(int(math.floor(math.log2(max(lo, 1.0)))), int(math.log2(STRIDE)))
    # Small objects are the hard end: the lowest anchor is at or below the 2nd percentile; the highest is within
    # half an octave of the 98th.
    k_hi = min(max(int(round(math.log2(max(hi, 1.0)))), k_lo), int(math.floor(math.log2(side))))
    sizes = [float(2 ** k) for k in range(k_lo, max(k_hi, k_lo) + 1)]
    r_lo, r_hi = np.quantile(np.log2(h / w), [0.05, 0.95])
    k_rlo = max(-2, min(-1, int(round(r_lo))))
    k_rhi = min(2, max(1, int(round(r_hi))))
    ratios = [float(2.0 ** k) for k in range(k_rlo, k_rhi + 1)]
    why = (f"boxes after resize are {lo:.0f}-{hi:.0f} px (sqrt(w*h), 2nd-98th percentile) and h/w "
           f"{2 ** r_lo:.2g}-{2 ** r_hi:.2g} (5th-95th): anchors an octave apart from {sizes[0]:g} to {sizes[-1]:g} "
           f"(not below the stride, {STRIDE}, nor above the image) and ratios {', '.join(f'{r:g}' for r in ratios)}")
    return float(hi / max(lo, 1e-6)), Choice("anchors", {"model.anchors.sizes": sizes, "model.anchors.ratios": ratios}, why)


def fpn_anchors(st: SplitStatistics, side: int, levels: int, ratios: list[float]) -> Choice:
    """One anchor size per pyramid level of the fpn model, an octave apart from the small boxes, with `ratios`."""
    w, h = resized_boxes(st, side)
    size = np.sqrt(w * h)[(w > 0) & (h > 0)]
    lo, hi = np.quantile(size, [0.02, 0.98])
    k_lo = max(int(math.floor(math.log2(max(lo, 1.0)))), int(math.log2(STRIDE)))
    sizes = [[float(2 ** (k_lo + i))] for i in range(levels)]
    why = (f"the fpn model has {levels} pyramid levels: one anchor size per level, an octave apart from "
           f"{sizes[0][0]:g} (boxes after resize are {lo:.0f}-{hi:.0f} px, 2nd-98th percentile; not below {STRIDE}) "
           f"to {sizes[-1][0]:g}")
    why += f", ratios {', '.join(f'{r:g}' for r in ratios)} (as for one level)"
    return Choice("anchors", {"model.fpn.anchor_sizes": sizes, "model.anchors.ratios": ratios}, why)


def choose_sampling(st: SplitStatistics, fpn_levels: int = 0) -> list[Choice]:
    """RPN and R-CNN minibatches, proposals and detections from the boxes per image.

    fpn_levels > 0: the fpn model, whose pre_nms_top_n counts per level: the same total is split over the levels.
    """
    per_image = st.boxes_per_image
    n90 = float(np.quantile(per_image, 0.9)) if len(per_image) else 0.0
    n_max = int(per_image.max()) if len(per_image) else 0
    # ~4 positive RoIs per box at R-CNN's 25% foreground, ~8 positive anchors per box at the RPN's 50%.
    rcnn = min(MAX_RCNN_SAMPLES, max(64, _pow2_ceil(16 * n90)))
    rpn = min(512, max(256, _pow2_ceil(16 * n90)))
    train_post = max(300, 2 * rcnn)
    test_post = min(1000, max(100, _round_up(10 * n_max, 100)))
    detections = max(100, _round_up(2 * n_max, 50))
    train_pre, test_pre = max(2000, 4 * train_post), max(1000, 5 * test_post)
    pre_why = ""
    if fpn_levels:
        train_pre, test_pre = _round_up(train_pre / fpn_levels, 100), _round_up(test_pre / fpn_levels, 100)
        pre_why = (f"; the fpn model keeps the top {train_pre} (training) and {test_pre} (test) per level before NMS, "
                   f"about 4x and 5x the proposals over its {fpn_levels} levels")
    return [
        Choice("samples", {"model.rpn.target.minibatch_size": rpn, "model.rcnn.target.minibatch_size": rcnn},
               f"90% of images have <= {n90:g} boxes: {rcnn} RoIs (25% foreground, ~4 per box, at most "
               f"{MAX_RCNN_SAMPLES} on a CPU) and {rpn} anchors (50% foreground) sampled per image"),
        Choice("proposals", {"model.rpn.train_proposals.pre_nms_top_n": train_pre,
                             "model.rpn.train_proposals.post_nms_top_n": train_post,
                             "model.rpn.test_proposals.pre_nms_top_n": test_pre,
                             "model.rpn.test_proposals.post_nms_top_n": test_post},
               f"{train_post} proposals in training (twice the RoI sample); {test_post} at test time, 10x the most "
               f"boxes in one image ({n_max}){pre_why}"),
        Choice("detections", {"model.postprocess.max_total": detections, "model.postprocess.max_per_class": detections},
               f"up to {detections} detections per image: at least twice the most boxes in one training image ({n_max})"),
    ]


def choose_class_balance(st: SplitStatistics) -> Choice:
    """Repeat factor sampling with t = the median class image-frequency, when classes are imbalanced."""
    f = st.class_image_fraction()
    present = f[f > 0]
    if len(present) < 2:
        return Choice("class balance", {"dataset.repeat_factor_threshold": 0.0},
                      "one class with boxes: nothing to balance")
    ratio = float(present.max() / present.min())
    if ratio < IMBALANCE_RATIO:
        return Choice("class balance", {"dataset.repeat_factor_threshold": 0.0},
                      f"the rarest class is in {ratio:.1f}x fewer images than the most common (< {IMBALANCE_RATIO:g}x): "
                      "no resampling")
    t = float(np.median(present))
    r = class_repeat_factors(f, t)
    rare = st.classes[int(np.argmax(r))]
    return Choice("class balance", {"dataset.repeat_factor_threshold": round(t, 6)},
                  f"the rarest class is in {ratio:.1f}x fewer images than the most common: repeat factor sampling with "
                  f"t = {t:.3g} (median class image-frequency); images of {rare!r} repeated {r.max():.2f}x")


def choose_schedule(st: SplitStatistics, side: int, rois: int, opts: RecipeOptions) -> Choice:
    """Cosine schedule on the clock for the time budget; steps from the measured or estimated speed."""
    minutes = opts.minutes if opts.minutes else DEFAULT_MINUTES
    scale = resize_scales(st.image_height, st.image_width, side, side)
    pixels = float(np.mean(st.image_width * st.image_height * scale ** 2))
    if opts.images_per_second:
        ips, how = opts.images_per_second, "measured"
    else:
        ips = 1.0 / (pixels / TRAIN_PIXELS_PER_SECOND + rois * ROI_SECONDS)
        how = f"estimated for {pixels / 1000:.0f}k px and {rois} RoIs per image"
    steps = max(1, int(minutes * 60 * ips / BATCH_SIZE))
    warmup = int(min(100, max(10, 0.03 * steps)))
    epochs = steps * BATCH_SIZE / max(st.num_images, 1)
    budget = f"{minutes:g} minutes" + ("" if opts.minutes else " (no budget given: the CPU default)")
    return Choice("schedule", {"train.max_minutes": minutes, "train.num_steps": 4 * steps,
                               "train.learning_rate.warmup_steps": warmup},
                  f"{budget} at ~{ips:.1f} images/s ({how}) is ~{steps} steps of {BATCH_SIZE} (~{epochs:.0f} epochs): "
                  f"{warmup} warm-up steps, cosine on the clock; num_steps {4 * steps} only as a ceiling")


def fpn_note(scale_range: float) -> Optional[str]:
    """The multi-level (fpn) model as a suggestion when box scales span more than FPN_SCALE_RANGE."""
    if scale_range < FPN_SCALE_RANGE:
        return None
    return (f"box sizes span {scale_range:.0f}x (over {FPN_SCALE_RANGE:g}x): the multi-level model "
            "(-o model.architecture=fpn) may suit this data; the recipe keeps the single-level one, which is what "
            "has been measured training from scratch on a CPU")


def make_recipe(st: SplitStatistics, opts: RecipeOptions = RecipeOptions()) -> Recipe:
    """Every rule applied to one split's statistics."""
    if st.num_boxes == 0:
        raise ValueError("the split has no boxes: no recipe can be derived")
    recipe = Recipe()
    if opts.from_scratch:
        recipe.choices.append(Choice(
            "backbone", dict(FROM_SCRATCH),
            "no pretrained weights assumed (none set): small_resnet, a light residual net that trains from scratch "
            "on a CPU, batch 4 for BatchNorm, Adam + cosine, heavy augmentation against memorising few images"))
    side = opts.side
    if opts.shapes:
        side, size_choice = choose_input_size(st)
        recipe.choices.append(size_choice)
        scale_range, anchor_choice = choose_anchors(st, side)
        if opts.fpn_levels:
            # The fpn model reads one size per level from model.fpn.anchor_sizes (never model.anchors.sizes).
            recipe.choices.append(fpn_anchors(st, side, opts.fpn_levels, anchor_choice.values["model.anchors.ratios"]))
        else:
            recipe.choices.append(anchor_choice)
            note = fpn_note(scale_range)
            if note:
                recipe.notes.append(note)
    sampling = choose_sampling(st, opts.fpn_levels)
    recipe.choices += sampling
    recipe.choices.append(choose_class_balance(st))
    if opts.schedule:
        rois = sampling[0].values["model.rcnn.target.minibatch_size"]
        recipe.choices.append(choose_schedule(st, side, rois, opts))
    return recipe
