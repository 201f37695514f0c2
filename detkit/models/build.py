"""`build_detector`: the one place that reads the model config and assembles a FasterRCNN from its parts.

    architecture   body                          neck   anchors (placement)        pooler
    single_level   one stride-16 map (+ C4 tail)  -      model.anchors.sizes        crop_and_resize + max-pool
                                                         (centered)                 (model.roi_pooling)
    fpn            the body's maps, finest first  FPN    model.fpn.anchor_sizes     multi-level RoIAlign
                                                         (torchvision's)            (model.fpn.roi_align)

Everything else (RPN head, sampling, proposals, R-CNN head, detections, losses) is shared.
"""
from __future__ import annotations

from detkit.config.schema import Config, ModelConfig, ProposalsConfig, TargetConfig
from detkit.models import bodies
from detkit.models.anchors import AnchorGenerator
from detkit.models.faster_rcnn import FasterRCNN, LossWeights, RoIHeadSettings, RPNSettings
from detkit.models.fpn import FPN
from detkit.models.matching import Sampling
from detkit.models.postprocess import DetectionSettings
from detkit.models.proposals import ProposalSettings
from detkit.models.rcnn import RCNNHead
from detkit.models.roi_align import MultiLevelRoIAlign
from detkit.models.roi_pooling import RoIPool
from detkit.models.rpn import RPNHead
from detkit.models.tiles import Tiling
from detkit.models.transform import InputTransform

# The width the fc head's 1x1 conv thins a single-level body's map to when model.rcnn.reduce_channels is null.
DEFAULT_REDUCE_CHANNELS = 256


def _sampling(t: TargetConfig) -> Sampling:
    """A stage's matching and sampling settings."""
    return Sampling(t.foreground_iou, t.background_iou_high, t.background_iou_low, t.minibatch_size,
                    t.foreground_fraction)


def _proposals(p: ProposalsConfig, m: ModelConfig) -> ProposalSettings:
    """One phase's proposal settings."""
    threshold = m.fpn.rpn_score_threshold if m.architecture == "fpn" else 0.0
    return ProposalSettings(p.pre_nms_top_n, p.post_nms_top_n, m.rpn.nms_iou, m.rpn.min_box_size, threshold)


def _trainable_layers(m: ModelConfig) -> int:
    """torchvision's trainable_layers for a *_tv body: as configured, else 3 with weights and all from scratch."""
    bn = m.base_network
    if bn.trainable_layers is not None:
        return bn.trainable_layers
    return 3 if bn.weights != "none" else bodies.tv_stages(bn.name)


def build_detector(cfg: Config, num_classes: int) -> FasterRCNN:
    """The detector `cfg.model` (and `cfg.dataset.image`, its input size) describes, with every variable created
    and randomly initialised (restore a checkpoint, or `detkit.pretrained.initial_weights`, to fill it)."""
    m = cfg.model
    bn = m.base_network
    fpn = m.architecture == "fpn"
    builder = bodies.pyramid_body if fpn else bodies.single_level_body
    extra = ({"strides": tuple(m.fpn.body_strides)} if fpn
             else {"with_tail": m.rcnn.enabled and m.rcnn.head == "conv5"})
    body, whole = builder(bn.name, bn.small_widths, bn.small_blocks, bn.freeze_batchnorm, _trainable_layers(m),
                          **extra)
    bodies.freeze(whole, bn.trainable, bn.fine_tune_from, bn.freeze_batchnorm)
    image = cfg.dataset.image
    transform = InputTransform(image.min_size, image.max_size, image.size_rounding, body.normalization,
                               m.fpn.size_divisible if fpn else 1)
    if fpn:
        neck = FPN(m.fpn.channels, len(body.strides), name="fpn")
        # The max-pooled level above the last has twice its stride.
        strides = tuple(body.strides) + (2 * body.strides[-1],)
        anchors = AnchorGenerator(tuple(tuple(s) for s in m.fpn.anchor_sizes), tuple(m.anchors.ratios), strides,
                                  "torchvision")
        ra = m.fpn.roi_align
        pooler = MultiLevelRoIAlign(tuple(body.strides), ra.output_size, ra.sampling_ratio, ra.canonical_size,
                                    ra.canonical_level)
    else:
        neck = None
        anchors = AnchorGenerator((tuple(m.anchors.sizes),), tuple(m.anchors.ratios), tuple(body.strides),
                                  "centered")
        # A ResNet's conv5 starts with a stride-2 block, which replaces the 2x2 max-pool.
        pooler = RoIPool(body.strides[0], m.roi_pooling.crop_size,
                         1 if body.tail is not None else m.roi_pooling.pool_stride)
    rpn_head = RPNHead(m.rpn.channels, anchors.num_per_location, name="rpn")
    rpn = RPNSettings(anchors, _sampling(m.rpn.target), m.rpn.match_low_quality, m.rpn.allowed_border,
                      _proposals(m.rpn.train_proposals, m), _proposals(m.rpn.test_proposals, m),
                      m.rpn.smooth_l1_beta)
    rcnn_head = roi = None
    if m.rcnn.enabled:
        reduce = m.rcnn.reduce_channels
        if reduce is None:
            reduce = 0 if fpn else DEFAULT_REDUCE_CHANNELS
        rcnn_head = RCNNHead(num_classes, m.rcnn.fc_sizes, m.rcnn.dropout, tail=body.tail, reduce_channels=reduce,
                             channels_first=fpn, name="rcnn")
        roi = RoIHeadSettings(pooler, _sampling(m.rcnn.target), m.rcnn.add_gt_boxes, tuple(m.rcnn.box_weights),
                              m.rcnn.smooth_l1_beta)
    pp = m.postprocess
    detections = DetectionSettings(pp.score_threshold, pp.nms_iou, pp.max_per_class, pp.max_total, pp.min_box_size)
    lw = m.loss_weights
    tiles = image.tiles
    tiling = Tiling(tiles.size, tiles.overlap, tiles.whole_image) if tiles.size > 0 else None
    model = FasterRCNN(transform, body.model, neck, rpn_head, rpn, rcnn_head, roi, detections, num_classes,
                       LossWeights(lw.rpn_class, lw.rpn_box, lw.rcnn_class, lw.rcnn_box, lw.l2), tiling)
    model.create_variables(side=2 * max(strides) if fpn else 4 * bodies.STRIDE)
    return model
