"""Range and consistency checks that the type system cannot express."""
from __future__ import annotations

from detkit.config.schema import Config, TargetConfig
from detkit.errors import ConfigError

# Stages of each torchvision-layout body, the range of model.base_network.trainable_layers.
_TV_STAGES = {"resnet50_tv": 5, "resnet101_tv": 5, "mobilenet_v3_large_tv": 6}


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


def check_values(c: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    img = c.dataset.image
    _positive("dataset.image.min_size", img.min_size)
    _positive("dataset.image.max_size", img.max_size)
    if img.min_size > img.max_size:
        raise ConfigError(
            f"config key dataset.image.min_size: must be <= dataset.image.max_size, got {img.min_size} > {img.max_size}"
        )
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
        if bn.name not in _TV_STAGES:
            raise ConfigError(f"config key model.base_network.trainable_layers: only for the torchvision-layout bodies "
                              f"({', '.join(_TV_STAGES)}), not {bn.name}; use null")
        if not 0 <= bn.trainable_layers <= _TV_STAGES[bn.name]:
            raise ConfigError(f"config key model.base_network.trainable_layers: must be within "
                              f"[0, {_TV_STAGES[bn.name]}] for {bn.name}, got {bn.trainable_layers}")
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
    _positive("model.rcnn.reduce_channels", m.rcnn.reduce_channels, allow_zero=True)
    if m.rcnn.enabled and m.rcnn.head == "conv5" and not bn.name.startswith("resnet"):
        raise ConfigError(
            f"config key model.rcnn.head: conv5 needs a ResNet base network (got {bn.name}); use head: fc"
        )
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
