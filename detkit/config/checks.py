"""Range and consistency checks that the type system cannot express."""
from __future__ import annotations

from detkit.config.schema import (PYRAMID_STRIDES, TV_BODY_STAGES, AnchorsConfig, Config, FPNConfig, ModelConfig,
                                  RoIPoolingConfig, TargetConfig)
from detkit.errors import ConfigError


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    """Raise unless value > 0 (or >= 0)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key {key}: must be {bound}, got {value}")


def _fraction(key: str, value: float) -> None:
    """Raise unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key {key}: must be within [0, 1], got {value}")


def _check_target(prefix: str, t: TargetConfig) -> None:
    """A stage's IoU thresholds must be ordered and its minibatch positive."""
    for name in ("foreground_iou", "background_iou_high", "background_iou_low", "foreground_fraction"):
        _fraction(f"{prefix}.{name}", getattr(t, name))
    if not t.background_iou_low <= t.background_iou_high <= t.foreground_iou:
        raise ConfigError(
            f"config key {prefix}: need background_iou_low <= background_iou_high <= foreground_iou, "
            f"got {t.background_iou_low} / {t.background_iou_high} / {t.foreground_iou}"
        )
    _positive(f"{prefix}.minibatch_size", t.minibatch_size)


def pyramid_strides(m: ModelConfig) -> tuple[int, ...]:
    """The strides of the body maps an fpn model is built on: model.fpn.body_strides, or all of the body's."""
    return tuple(m.fpn.body_strides) or PYRAMID_STRIDES[m.base_network.name]


def _check_architecture(m: ModelConfig) -> None:
    """Keys one architecture has and the other has not: set for the wrong one, they are an error, not ignored."""
    bn = m.base_network
    if bn.name in ("small_resnet",) + tuple(TV_BODY_STAGES) and bn.weights == "imagenet":
        raise ConfigError(f"config key model.base_network.weights: {bn.name} has no downloadable Keras ImageNet "
                          "weights; use none, a .weights.h5 file"
                          + (", or torchvision's state dict saved as .npz" if bn.name in TV_BODY_STAGES else ""))
    if m.architecture == "single_level":
        if bn.name == "mobilenet_v3_large_tv":
            raise ConfigError("config key model.base_network.name: mobilenet_v3_large_tv has no stride-16 output; "
                              "it serves the fpn architecture only (model.architecture: fpn)")
        if m.fpn != FPNConfig():
            raise ConfigError("config key model.fpn: only the fpn architecture has a pyramid; set "
                              "model.architecture: fpn, or leave model.fpn at its defaults")
        return
    if bn.name not in PYRAMID_STRIDES:
        raise ConfigError(f"config key model.base_network.name: {bn.name} has no fpn body; use "
                          f"{', '.join(PYRAMID_STRIDES)} (or model.architecture: single_level)")
    available = PYRAMID_STRIDES[bn.name]
    chosen = m.fpn.body_strides
    if chosen and (len(set(available)) < len(available) or sorted(set(chosen)) != chosen
                   or not set(chosen) <= set(available)):
        allowed = ("all of them: []" if len(set(available)) < len(available)
                   else f"increasing strides among {list(available)}")
        raise ConfigError(f"config key model.fpn.body_strides: {bn.name} gives maps at strides {list(available)}; "
                          f"choose {allowed}, got {chosen}")
    if m.anchors.sizes != AnchorsConfig().sizes:
        raise ConfigError("config key model.anchors.sizes: the fpn architecture takes one list of sizes per level "
                          "from model.fpn.anchor_sizes; leave model.anchors.sizes at its default")
    if m.roi_pooling != RoIPoolingConfig():
        raise ConfigError("config key model.roi_pooling: the fpn architecture pools with model.fpn.roi_align; leave "
                          "model.roi_pooling at its defaults")
    if m.rcnn.head != "fc":
        raise ConfigError(f"config key model.rcnn.head: the fpn architecture has the two-FC head (fc), not "
                          f"{m.rcnn.head}")
    if m.rcnn.reduce_channels:
        raise ConfigError("config key model.rcnn.reduce_channels: the fpn architecture pools the pyramid's levels, "
                          "already model.fpn.channels wide; set model.fpn.channels instead, and this key to 0 or null")
    levels = len(pyramid_strides(m)) + 1
    sizes = m.fpn.anchor_sizes
    if len(sizes) != levels:
        raise ConfigError(f"config key model.fpn.anchor_sizes: {bn.name} gives {levels} pyramid levels (with the "
                          f"pooled one), so it needs {levels} lists, got {len(sizes)}")
    if len({len(s) for s in sizes}) != 1 or not sizes[0]:
        raise ConfigError("config key model.fpn.anchor_sizes: every level needs the same number of sizes, at least "
                          "one (the RPN head is shared)")
    for i, level in enumerate(sizes):
        for j, size in enumerate(level):
            _positive(f"model.fpn.anchor_sizes[{i}][{j}]", size)
    _positive("model.fpn.channels", m.fpn.channels)
    _positive("model.fpn.size_divisible", m.fpn.size_divisible)
    _fraction("model.fpn.rpn_score_threshold", m.fpn.rpn_score_threshold)
    ra = m.fpn.roi_align
    _positive("model.fpn.roi_align.output_size", ra.output_size)
    _positive("model.fpn.roi_align.sampling_ratio", ra.sampling_ratio)
    _positive("model.fpn.roi_align.canonical_size", ra.canonical_size)


def check_values(c: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    img = c.dataset.image
    _positive("dataset.image.min_size", img.min_size)
    _positive("dataset.image.max_size", img.max_size)
    if img.min_size > img.max_size:
        raise ConfigError(
            f"config key dataset.image.min_size: must be <= dataset.image.max_size, got {img.min_size} > {img.max_size}"
        )
    tiles = img.tiles
    _positive("dataset.image.tiles.size", tiles.size, allow_zero=True)
    # Beyond 0.75 every pixel would lie in more than four tiles per axis: the tiles multiply for nothing.
    if not 0.0 <= tiles.overlap <= 0.75:
        raise ConfigError(f"config key dataset.image.tiles.overlap: must be within [0, 0.75], got {tiles.overlap}")
    _fraction("dataset.image.tiles.min_visible", tiles.min_visible)
    aug = c.dataset.augment
    if len(aug.scale_range) != 2 or not 0 < aug.scale_range[0] <= aug.scale_range[1]:
        raise ConfigError(f"config key dataset.augment.scale_range: expected [low, high] with 0 < low <= high, got {aug.scale_range}")
    _fraction("dataset.augment.crop_probability", aug.crop_probability)
    if not 0 < aug.crop_min_fraction <= 1:
        raise ConfigError(f"config key dataset.augment.crop_min_fraction: must be within (0, 1], got {aug.crop_min_fraction}")
    for name in ("brightness", "contrast", "saturation", "hue"):
        _positive(f"dataset.augment.{name}", getattr(aug, name), allow_zero=True)
    for i, source in enumerate(c.dataset.extra_sources):
        directory, sep, split = source.rpartition(":")
        if not sep or not directory.strip() or not split.strip():
            raise ConfigError(f'config key dataset.extra_sources[{i}]: expected "DIR:SPLIT", got {source!r}')
    _fraction("dataset.repeat_factor_threshold", c.dataset.repeat_factor_threshold)
    _positive("dataset.shuffle_buffer", c.dataset.shuffle_buffer, allow_zero=True)
    _positive("dataset.num_parallel_calls", c.dataset.num_parallel_calls)

    m = c.model
    bn = m.base_network
    if len(bn.small_widths) != 4 or len(bn.small_blocks) != 4:
        raise ConfigError("config key model.base_network.small_widths: small_widths and small_blocks need 4 entries each")
    if bn.trainable_layers is not None:
        if bn.name not in TV_BODY_STAGES:
            raise ConfigError(f"config key model.base_network.trainable_layers: only for the torchvision-layout bodies "
                              f"({', '.join(TV_BODY_STAGES)}), not {bn.name}; use null")
        if not 0 <= bn.trainable_layers <= TV_BODY_STAGES[bn.name]:
            raise ConfigError(f"config key model.base_network.trainable_layers: must be within "
                              f"[0, {TV_BODY_STAGES[bn.name]}] for {bn.name}, got {bn.trainable_layers}")
    if not m.anchors.sizes:
        raise ConfigError("config key model.anchors.sizes: needs at least one size")
    if not m.anchors.ratios:
        raise ConfigError("config key model.anchors.ratios: needs at least one ratio")
    for i, s in enumerate(m.anchors.sizes):
        _positive(f"model.anchors.sizes[{i}]", s)
    for i, r in enumerate(m.anchors.ratios):
        _positive(f"model.anchors.ratios[{i}]", r)
    _positive("model.rpn.channels", m.rpn.channels)
    _check_target("model.rpn.target", m.rpn.target)
    _check_target("model.rcnn.target", m.rcnn.target)
    _fraction("model.rpn.nms_iou", m.rpn.nms_iou)
    for phase in ("train_proposals", "test_proposals"):
        p = getattr(m.rpn, phase)
        _positive(f"model.rpn.{phase}.pre_nms_top_n", p.pre_nms_top_n)
        _positive(f"model.rpn.{phase}.post_nms_top_n", p.post_nms_top_n)
        if p.post_nms_top_n > p.pre_nms_top_n:
            raise ConfigError(f"config key model.rpn.{phase}.post_nms_top_n: must be <= pre_nms_top_n")
    _positive("model.roi_pooling.crop_size", m.roi_pooling.crop_size)
    _positive("model.roi_pooling.pool_stride", m.roi_pooling.pool_stride)
    if m.roi_pooling.crop_size % m.roi_pooling.pool_stride:
        raise ConfigError("config key model.roi_pooling.crop_size: must be a multiple of pool_stride")
    for i, s in enumerate(m.rcnn.fc_sizes):
        _positive(f"model.rcnn.fc_sizes[{i}]", s)
    if m.rcnn.reduce_channels is not None:
        _positive("model.rcnn.reduce_channels", m.rcnn.reduce_channels, allow_zero=True)
    if m.rcnn.enabled and m.rcnn.head == "conv5" and not bn.name.startswith("resnet"):
        raise ConfigError(
            f"config key model.rcnn.head: conv5 needs a ResNet base network (got {bn.name}); use head: fc"
        )
    _check_architecture(m)
    if len(m.rcnn.box_weights) != 4:
        raise ConfigError(f"config key model.rcnn.box_weights: expected 4 numbers, got {m.rcnn.box_weights}")
    _fraction("model.rcnn.dropout", m.rcnn.dropout)
    pp = m.postprocess
    _fraction("model.postprocess.score_threshold", pp.score_threshold)
    _fraction("model.postprocess.nms_iou", pp.nms_iou)
    _positive("model.postprocess.max_per_class", pp.max_per_class)
    _positive("model.postprocess.max_total", pp.max_total)
    for name in ("rpn_class", "rpn_box", "rcnn_class", "rcnn_box", "l2"):
        _positive(f"model.loss_weights.{name}", getattr(m.loss_weights, name), allow_zero=True)

    t = c.train
    _positive("train.batch_size", t.batch_size)
    _positive("train.num_steps", t.num_steps, allow_zero=True)
    _positive("train.num_epochs", t.num_epochs, allow_zero=True)
    _positive("train.max_minutes", t.max_minutes, allow_zero=True)
    if t.num_steps == 0 and t.num_epochs == 0:
        raise ConfigError("config key train.num_steps: set train.num_steps or train.num_epochs (both are 0)")
    lr = t.learning_rate
    _positive("train.learning_rate.base", lr.base)
    _positive("train.learning_rate.factor", lr.factor)
    _positive("train.learning_rate.warmup_steps", lr.warmup_steps, allow_zero=True)
    _fraction("train.learning_rate.final_fraction", lr.final_fraction)
    _positive("train.optimizer.clip_norm", t.optimizer.clip_norm, allow_zero=True)
    _fraction("train.optimizer.momentum", t.optimizer.momentum)
    _positive("train.checkpoint_every_steps", t.checkpoint_every_steps)
    _positive("train.keep_checkpoints", t.keep_checkpoints)
    _positive("train.log_every_steps", t.log_every_steps)
    _positive("train.local_workers_kill_grace_seconds", t.local_workers_kill_grace_seconds, allow_zero=True)
    _fraction("eval.iou_threshold", c.eval.iou_threshold)
    _fraction("predict.min_prob", c.predict.min_prob)
    _positive("predict.max_detections", c.predict.max_detections)
    _positive("predict.batch_size", c.predict.batch_size)
