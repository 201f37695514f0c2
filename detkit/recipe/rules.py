"""Pure rules: a training split's statistics -> config values, each with a one-line reason.

Every rule reads the boxes as the network will see them (after the input resize, or in tiles at the photos' own
resolution) and works for any dataset;
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
# An object shorter than this many cells of a feature map falls between them: 24 px at stride 16, 12 at stride 8.
OBJECT_CELLS = 1.5
# The share of each class's boxes allowed below OBJECT_CELLS cells of the finest map ("the small objects that
# matter" start above it).
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
# Width of the pyramid of the from-scratch multi-level models: their levels cost as little as the body's own maps.
FPN_CHANNELS = 64
# Photos at least this much larger than the CPU budget's side are cut into tiles at their own resolution when the
# model cannot resolve their small objects within the budget.
TILE_FACTOR = 1.5
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


# Fine-tuning a downloaded detector (torchvision's reference recipe, lr 0.02 for a batch of 16, scaled to 4):
# SGD with momentum on a cosine schedule, torchvision's weight decay, flips and mild scale jitter. Its frozen
# BatchNorm and input size are the downloaded model's own (train.init_from keeps its model.* and dataset.image.*).
FINETUNE: dict[str, Any] = {
    "train.batch_size": BATCH_SIZE,
    "train.optimizer.type": "sgd",
    "train.optimizer.momentum": 0.9,
    "train.optimizer.clip_norm": 10.0,
    "train.learning_rate.schedule": "cosine",
    "train.learning_rate.base": 0.005,
    "train.learning_rate.final_fraction": 0.02,
    "model.loss_weights.l2": 0.0001,
    "dataset.augment.flip_horizontal": True,
    "dataset.augment.scale_range": [0.8, 1.2],
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
    finetune: str = ""                       # the detector train.init_from starts from: apply FINETUNE (its name)
    architecture: str = ""                   # the user's model.architecture; "" = the recipe chooses (from scratch)
    # The body maps of the user's pyramid (model.fpn.body_strides, or all of a chosen body's); () = none chosen.
    body_strides: tuple[int, ...] = ()
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


@dataclass(frozen=True)
class Candidate:
    """A from-scratch model the recipe trains: its pyramid (none for the single-level model) and its cost."""

    name: str
    architecture: str              # single_level | fpn
    body_strides: tuple[int, ...]  # the small_resnet maps the pyramid is built on (() for single_level)
    # Training seconds per input pixel relative to the single-level model (benchmarks/train_speed.py).
    cost_factor: float

    @property
    def finest_stride(self) -> int:
        """The stride of the finest feature map: what the smallest object is measured against."""
        return self.body_strides[0] if self.body_strides else STRIDE

    @property
    def levels(self) -> int:
        """Feature levels the RPN runs on (the pyramid's max-pooled one included)."""
        return len(self.body_strides) + 1 if self.body_strides else 1

    def smallest_object(self) -> float:
        """The smallest object side (pixels after the resize) its finest map resolves."""
        return OBJECT_CELLS * self.finest_stride


CANDIDATES = (
    Candidate("single_level", "single_level", (), 1.0),
    Candidate("pyramid from stride 8", "fpn", (8, 16), 1.3),
    Candidate("pyramid from stride 4", "fpn", (4, 8, 16), 2.4),
)


@dataclass(frozen=True)
class ModelChoice:
    """The model, its input side (the longer side after the resize, or the tile side) and the tile size (0 = the
    whole photo resized)."""

    candidate: Candidate
    side: int
    tile: int = 0


def small_object_fraction(st: SplitStatistics) -> float:
    """The SMALL_QUANTILE of each class's boxes' shorter side, as a fraction of its image's longer side."""
    long_side = np.maximum(st.image_width, st.image_height)
    short_rel = np.minimum(st.box_width, st.box_height) / long_side[st.box_image]
    return weighted_quantile(short_rel, class_weights(st.box_label, len(st.classes)), SMALL_QUANTILE)


def budget_side(st: SplitStatistics) -> int:
    """The longest input side the CPU budget of pixels per image allows at the photos' median aspect."""
    long_side = np.maximum(st.image_width, st.image_height)
    aspect = float(np.median(np.minimum(st.image_width, st.image_height) / np.maximum(long_side, 1.0)))
    return max(MIN_SIDE, int(math.sqrt(PIXEL_BUDGET / max(aspect, 1e-3)) // SIDE_STEP * SIDE_STEP))


def choose_model(st: SplitStatistics, candidates: tuple[Candidate, ...] = CANDIDATES) -> tuple[ModelChoice, Choice]:
    """The cheapest model and input side at which the small objects stay resolvable, within the CPU budget.

    Each candidate needs a side at which the small objects (SMALL_QUANTILE) cover OBJECT_CELLS cells of its finest
    map: upscaling buys resolution and costs epochs (time per image grows with the pixels and the pyramid), so
    the cheapest one that fits wins. When none fits and the photos are much larger than the budget, they are
    cut into tiles at their own resolution; otherwise the finest model takes the budget's side.
    """
    small = small_object_fraction(st)
    budget = budget_side(st)
    native = float(np.median(np.maximum(st.image_width, st.image_height)))
    pct = round(SMALL_QUANTILE * 100)
    fits = []
    for c in candidates:
        side = max(MIN_SIDE, _round_up(c.smallest_object() / max(small, 1e-6), SIDE_STEP))
        if side <= budget:
            fits.append((side * side * c.cost_factor, c, side))
    head = f"{pct}% of each class's boxes are shorter than {small:.3g} of the image's longer side"
    if fits:
        _, c, side = min(fits, key=lambda f: f[0])
        why = (f"{head}; at {side} px that is {small * side:.0f} px, over the {c.smallest_object():g} px its finest "
               f"map (stride {c.finest_stride}) resolves")
        if len(fits) > 1 or c is not candidates[0]:
            why += " — the cheapest model that resolves them (input pixels times each model's cost)"
        return ModelChoice(c, side), _model_choice(ModelChoice(c, side), why)
    finest = candidates[-1]
    if native >= TILE_FACTOR * budget:
        tile = min(budget, _round_up(native, SIDE_STEP))
        resolving = [c for c in candidates if small * native >= c.smallest_object()]
        c = resolving[0] if resolving else finest
        choice = ModelChoice(c, tile, tile)
        why = (f"{head}: no model resolves them within the CPU budget ({PIXEL_BUDGET // 1000}k px, side {budget}); "
               f"the photos ({native:.0f} px) are cut into {tile} px tiles at their own resolution, where they are "
               f"{small * native:.0f} px (stride {c.finest_stride} resolves {c.smallest_object():g} px)")
        return choice, _model_choice(choice, why)
    choice = ModelChoice(finest, budget)
    why = (f"{head}: at {budget} px, the CPU budget's side, that is {small * budget:.0f} px, under the "
           f"{finest.smallest_object():g} px even the finest map (stride {finest.finest_stride}) resolves")
    return choice, _model_choice(choice, why)


def choose_input_size(st: SplitStatistics, model: Candidate) -> tuple[ModelChoice, Choice]:
    """The input side (and tiles) for a model the user chose, by the same rule as choose_model."""
    choice, made = choose_model(st, (model,))
    return choice, Choice("input size", {k: v for k, v in made.values.items() if k.startswith("dataset.")},
                          made.reason)


def _model_choice(choice: ModelChoice, why: str) -> Choice:
    """The config values of a model choice."""
    c = choice.candidate
    values: dict[str, Any] = {"model.architecture": c.architecture,
                              "dataset.image.min_size": choice.side, "dataset.image.max_size": choice.side}
    if c.architecture == "fpn":
        values.update({"model.fpn.body_strides": list(c.body_strides), "model.fpn.channels": FPN_CHANNELS})
    if choice.tile:
        values.update({"dataset.image.tiles.size": choice.tile, "dataset.augment.crop_probability": 0.0})
    return Choice("model and input size", values, why)


def resized_boxes(st: SplitStatistics, side: int, tile: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Box widths and heights in pixels as the network sees them: after resizing every image to `side`, or, with
    tiles, at the photos' own resolution (cut at the tile's side)."""
    if tile:
        return np.minimum(st.box_width, tile), np.minimum(st.box_height, tile)
    scale = resize_scales(st.image_height, st.image_width, side, side)[st.box_image]
    return st.box_width * scale, st.box_height * scale


def _seen(tile: int) -> str:
    """How the boxes the anchor rules read are scaled, for their reasons."""
    return "in the tiles (the photos' own resolution)" if tile else "after resize"


def _anchor_octaves(st: SplitStatistics, side: int, floor_px: float, tile: int = 0) -> tuple[int, float, float]:
    """(log2 of the lowest anchor size, 2nd and 98th percentile of sqrt(w*h) as the network sees the boxes)."""
    w, h = resized_boxes(st, side, tile)
    keep = (w > 0) & (h > 0)
    size = np.sqrt(w[keep] * h[keep])
    lo, hi = np.quantile(size, [0.02, 0.98])
    return max(int(math.floor(math.log2(max(lo, 1.0)))), int(math.log2(floor_px))), float(lo), float(hi)


def choose_ratios(st: SplitStatistics, side: int, tile: int = 0) -> tuple[list[float], str]:
    """Anchor ratios (h/w, powers of two) covering the 5th-95th percentile of the boxes' h/w."""
    w, h = resized_boxes(st, side, tile)
    keep = (w > 0) & (h > 0)
    r_lo, r_hi = np.quantile(np.log2(h[keep] / w[keep]), [0.05, 0.95])
    k_rlo = max(-2, min(-1, int(round(r_lo))))
    k_rhi = min(2, max(1, int(round(r_hi))))
    ratios = [float(2.0 ** k) for k in range(k_rlo, k_rhi + 1)]
    return ratios, f"h/w {2 ** r_lo:.2g}-{2 ** r_hi:.2g} (5th-95th): ratios {', '.join(f'{r:g}' for r in ratios)}"


def choose_anchors(st: SplitStatistics, side: int, stride: int = STRIDE, tile: int = 0) -> Choice:
    """One level's anchor sizes, an octave apart, covering the 2nd-98th percentile of sqrt(w*h) (not below the
    stride), and ratios covering h/w."""
    k_lo, lo, hi = _anchor_octaves(st, side, stride, tile)
    # Small objects are the hard end: the lowest anchor is at or below the 2nd percentile; the highest is within
    # half an octave of the 98th.
    k_hi = min(max(int(round(math.log2(max(hi, 1.0)))), k_lo), int(math.floor(math.log2(side))))
    sizes = [float(2 ** k) for k in range(k_lo, max(k_hi, k_lo) + 1)]
    ratios, ratio_why = choose_ratios(st, side, tile)
    why = (f"boxes {_seen(tile)} are {lo:.0f}-{hi:.0f} px (sqrt(w*h), 2nd-98th percentile) and {ratio_why}: anchors "
           f"an octave apart from {sizes[0]:g} to {sizes[-1]:g} (not below the stride, {stride}, nor above the image)")
    return Choice("anchors", {"model.anchors.sizes": sizes, "model.anchors.ratios": ratios}, why)


def pyramid_anchors(st: SplitStatistics, side: int, levels: int, finest_stride: int, tile: int = 0) -> Choice:
    """One anchor size per pyramid level, an octave apart from the small boxes (not below twice the finest
    stride), with the ratios covering h/w."""
    k_lo, lo, hi = _anchor_octaves(st, side, 2 * finest_stride, tile)
    sizes = [[float(2 ** (k_lo + i))] for i in range(levels)]
    ratios, ratio_why = choose_ratios(st, side, tile)
    why = (f"the pyramid has {levels} levels: one anchor size per level, an octave apart from {sizes[0][0]:g} "
           f"(boxes {_seen(tile)} are {lo:.0f}-{hi:.0f} px, 2nd-98th percentile; not below twice the finest stride, "
           f"{2 * finest_stride}) to {sizes[-1][0]:g}")
    if hi > math.sqrt(2) * sizes[-1][0]:
        why += (f"; boxes above {sizes[-1][0] * math.sqrt(2):.0f} px have no anchor within half an octave and are "
                "learnt from the top level's by regression")
    why += f"; {ratio_why}"
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


def input_pixels(st: SplitStatistics, side: int, tile: int = 0) -> float:
    """Mean pixels per training image: each photo resized to `side`, or a tile of at most tile x tile pixels."""
    if tile:
        return float(np.mean(np.minimum(st.image_width, tile) * np.minimum(st.image_height, tile)))
    scale = resize_scales(st.image_height, st.image_width, side, side)
    return float(np.mean(st.image_width * st.image_height * scale ** 2))


def choose_schedule(st: SplitStatistics, side: int, rois: int, opts: RecipeOptions,
                    model: Optional[ModelChoice] = None) -> Choice:
    """Cosine schedule on the clock for the time budget; steps from the measured or estimated speed (the input's
    pixels times the model's cost, plus the RoIs)."""
    minutes = opts.minutes if opts.minutes else DEFAULT_MINUTES
    pixels = input_pixels(st, side, model.tile if model else 0)
    factor = model.candidate.cost_factor if model else 1.0
    if opts.images_per_second:
        ips, how = opts.images_per_second, "measured"
    else:
        ips = 1.0 / (pixels * factor / TRAIN_PIXELS_PER_SECOND + rois * ROI_SECONDS)
        how = f"estimated for {pixels / 1000:.0f}k px" + (f" x {factor:g} (its pyramid)" if factor != 1.0 else "") + \
              f" and {rois} RoIs per image"
    steps = max(1, int(minutes * 60 * ips / BATCH_SIZE))
    warmup = int(min(100, max(10, 0.03 * steps)))
    epochs = steps * BATCH_SIZE / max(st.num_images, 1)
    budget = f"{minutes:g} minutes" + ("" if opts.minutes else " (no budget given: the CPU default)")
    return Choice("schedule", {"train.max_minutes": minutes, "train.num_steps": 4 * steps,
                               "train.learning_rate.warmup_steps": warmup},
                  f"{budget} at ~{ips:.1f} images/s ({how}) is ~{steps} steps of {BATCH_SIZE} (~{epochs:.0f} epochs): "
                  f"{warmup} warm-up steps, cosine on the clock; num_steps {4 * steps} only as a ceiling")


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
    if opts.finetune:
        recipe.choices.append(Choice(
            "fine-tuning", dict(FINETUNE),
            f"starting from {opts.finetune}: its layers are trained already (its class heads are new when your "
            "classes differ), so SGD at torchvision's fine-tuning rate (0.005 for a batch of 4) on a cosine schedule, "
            "its own input size and BatchNorm setting (frozen in torchvision's detectors), flips and mild scale "
            "jitter"))
    side, model = opts.side, None
    levels = len(opts.body_strides) + 1 if opts.body_strides else 0
    if opts.shapes:
        if opts.from_scratch and not opts.body_strides:
            model, choice = choose_model(st, tuple(c for c in CANDIDATES if opts.architecture in ("", c.architecture)))
        else:
            cost = next((c.cost_factor for c in CANDIDATES if c.body_strides == opts.body_strides), 1.0)
            mine = Candidate("your model", "fpn" if opts.body_strides else "single_level", opts.body_strides, cost)
            model, choice = choose_input_size(st, mine) if not opts.from_scratch else choose_model(st, (mine,))
        recipe.choices.append(choice)
        side, c = model.side, model.candidate
        levels = c.levels if c.architecture == "fpn" else 0
        recipe.choices.append(pyramid_anchors(st, side, levels, c.finest_stride, model.tile) if levels
                              else choose_anchors(st, side, tile=model.tile))
    sampling = choose_sampling(st, levels)
    recipe.choices += sampling
    recipe.choices.append(choose_class_balance(st))
    if opts.schedule:
        rois = sampling[0].values["model.rcnn.target.minibatch_size"]
        recipe.choices.append(choose_schedule(st, side, rois, opts, model))
    return recipe
