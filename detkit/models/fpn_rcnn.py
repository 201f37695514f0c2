"""Faster R-CNN with a feature pyramid, as torchvision builds it: body -> FPN -> shared RPN head -> per-level
proposals -> multi-level RoIAlign -> two-FC box head -> detections."""
from __future__ import annotations

import tensorflow as tf

from detkit.config.schema import ModelConfig
from detkit.errors import ConfigError
from detkit.models import anchors as anchor_ops
from detkit.models import postprocess, proposals, rcnn, roi_align, rpn
from detkit.models.faster_rcnn import DetectorModel
from detkit.models.fpn import FPN
from detkit.models.fpn_bodies import build_pyramid_body


def pad_and_mask(images: tf.Tensor, image_hw: tf.Tensor, divisible: int) -> tf.Tensor:
    """Zero every pixel outside each image's (height, width) and pad bottom/right to a multiple of `divisible`.

    torchvision normalises each image and then pads the batch with zeros; a batch padded before
    normalisation is brought to the same values here.
    """
    hw = tf.shape(images)[1:3]
    rows = tf.range(hw[0])[None, :, None] < tf.cast(image_hw[:, 0:1, None], tf.int32)
    cols = tf.range(hw[1])[None, None, :] < tf.cast(image_hw[:, 1:2, None], tf.int32)
    images = images * tf.cast((rows & cols)[..., None], images.dtype)
    pad = (-hw) % divisible
    return tf.pad(images, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]])


class FPNFasterRCNN(DetectorModel):
    """The fpn architecture; same inputs, outputs and training interface as FasterRCNN."""

    def __init__(self, cfg: ModelConfig, num_classes: int, **kwargs):
        super().__init__(name="faster_rcnn", **kwargs)
        self.cfg = cfg
        self.num_classes = num_classes
        body = build_pyramid_body(cfg.base_network)
        self.backbone = body.model
        self.strides = body.strides
        self.preprocess = body.preprocess
        self.stride = max(self.strides)
        num_levels = len(self.strides) + 1
        sizes = cfg.fpn.anchor_sizes
        if len(sizes) != num_levels:
            raise ConfigError(f"config key model.fpn.anchor_sizes: {cfg.base_network.name} gives {num_levels} pyramid "
                              f"levels (with the pooled one), so it needs {num_levels} lists, got {len(sizes)}")
        if len({len(s) for s in sizes}) != 1:
            raise ConfigError("config key model.fpn.anchor_sizes: every level needs the same number of sizes "
                              "(the RPN head is shared)")
        self.fpn = FPN(cfg.fpn.channels, len(self.strides), name="fpn")
        self.fpn.torch_prefix = "backbone.fpn."
        num_anchors = len(sizes[0]) * len(cfg.anchors.ratios)
        self.rpn_head = rpn.RPNHead(cfg.rpn.channels, num_anchors, name="rpn")
        self.rpn_head.torch_prefix = "rpn.head."
        self.rpn_head.conv.torch_name = "conv.0.0"
        self.rpn_head.cls.torch_name = "cls_logits"
        self.rpn_head.box.torch_name = "bbox_pred"
        self.rcnn_head = None
        if cfg.rcnn.enabled:
            self.rcnn_head = rcnn.RCNNHead(num_classes, cfg.rcnn.fc_sizes, cfg.rcnn.dropout, name="rcnn")
            self.rcnn_head.torch_prefix = "roi_heads."
            for i, fc in enumerate(self.rcnn_head.fcs):
                fc.torch_name = f"box_head.fc{i + 6}"
            self.rcnn_head.cls.torch_name = "box_predictor.cls_score"
            self.rcnn_head.box.torch_name = "box_predictor.bbox_pred"

    # ------------------------------------------------------------ stages
    def pyramid(self, images: tf.Tensor, image_hw: tf.Tensor, training: bool = False) -> tuple[list, tf.Tensor]:
        """(FPN levels [P_a .. P_b+1], padded (height, width)) of a batch of 0-255 images."""
        x = pad_and_mask(self.preprocess(images), image_hw, self.cfg.fpn.size_divisible)
        features = self.backbone(x, training=training)
        if not isinstance(features, (list, tuple)):
            features = [features]
        return self.fpn(list(features)), tf.shape(x)[1:3]

    def rpn_outputs(self, levels: list, padded_hw: tf.Tensor) -> tuple[list, list, list]:
        """Per level: objectness logits [B, N_l], deltas [B, N_l, 4] (float32) and anchors [N_l, 4]."""
        logits, deltas, anchors = [], [], []
        for level, features in enumerate(levels):
            lg, dl = self.rpn_head(features)
            logits.append(tf.cast(lg, tf.float32))
            deltas.append(tf.cast(dl, tf.float32))
            feature_hw = tf.shape(features)[1:3]
            anchors.append(anchor_ops.generate_level_anchors(
                feature_hw, anchor_ops.level_stride(padded_hw, feature_hw), self.cfg.fpn.anchor_sizes[level],
                self.cfg.anchors.ratios))
        return logits, deltas, anchors

    def _proposals(self, logits, deltas, anchors, image_hw, training: bool):
        """Proposals with the train or test top-N settings."""
        p = self.cfg.rpn.train_proposals if training else self.cfg.rpn.test_proposals
        return proposals.generate_multilevel_proposals(
            [tf.stop_gradient(x) for x in logits], [tf.stop_gradient(x) for x in deltas], anchors, image_hw,
            p.pre_nms_top_n, p.post_nms_top_n, self.cfg.rpn.nms_iou, self.cfg.rpn.min_box_size,
            self.cfg.fpn.rpn_score_threshold)

    def _rcnn(self, levels: list, rois: tf.Tensor, training: bool):
        """Box head on RoIs [B, R, 4] -> logits [B, R, C+1], deltas [B, R, C, 4]."""
        ra = self.cfg.fpn.roi_align
        maps = [tf.cast(f, tf.float32) for f in levels[:len(self.strides)]]
        pooled = roi_align.multilevel_roi_align(maps, self.strides, rois, ra.output_size, ra.sampling_ratio,
                                                ra.canonical_size, ra.canonical_level)
        # torchvision flattens (C, H, W): channel-first so its fc6 weights apply unchanged.
        pooled = tf.transpose(pooled, [0, 3, 1, 2])
        logits, deltas = self.rcnn_head(pooled, training=training)
        batch = tf.shape(rois)[0]
        num = tf.shape(rois)[1]
        return (tf.reshape(tf.cast(logits, tf.float32), [batch, num, self.num_classes + 1]),
                tf.reshape(tf.cast(deltas, tf.float32), [batch, num, self.num_classes, 4]))

    def stages(self, images: tf.Tensor, image_hw: tf.Tensor) -> dict:
        """Inference with every intermediate result: pyramid, objectness, proposals, detections."""
        image_hw = tf.cast(image_hw, tf.float32)
        levels, padded_hw = self.pyramid(images, image_hw, training=False)
        logits, deltas, anchors = self.rpn_outputs(levels, padded_hw)
        boxes, scores, valid = self._proposals(logits, deltas, anchors, image_hw, training=False)
        if self.rcnn_head is None:
            out = postprocess.detections_from_rpn(boxes, scores, valid, self.cfg.postprocess)
        else:
            # Valid proposals come first: the head runs only on as many rows as the fullest image has,
            # as torchvision runs it only on the proposals it kept.
            count = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)), 1)
            rois, rois_valid = boxes[:, :count], valid[:, :count]
            cls_logits, box_deltas = self._rcnn(levels, rois, training=False)
            out = postprocess.detections_from_rcnn(rois, rois_valid, cls_logits, box_deltas, image_hw,
                                                   self.cfg.rcnn.box_weights, self.cfg.postprocess)
        out.update(features=levels, objectness=logits, proposals=boxes, proposal_scores=scores,
                   proposal_valid=valid)
        return out

    def call(self, inputs, training: bool = False):
        """(images [B, H, W, 3] float 0-255, image_hw [B, 2] int) -> padded detections in resized pixels."""
        images, image_hw = inputs
        out = self.stages(images, image_hw)
        keep = ("boxes", "scores", "labels", "num_detections", "proposals", "proposal_scores")
        return {k: out[k] for k in keep}

    # ------------------------------------------------------------ training
    def rpn_stage(self, images: tf.Tensor, image_hw: tf.Tensor, training: bool) -> tuple:
        """(pyramid levels, per-level RPN logits, deltas and anchors), as `_proposals` and `_rcnn` take them."""
        levels, padded_hw = self.pyramid(images, image_hw, training=training)
        logits, deltas, anchors = self.rpn_outputs(levels, padded_hw)
        return levels, logits, deltas, anchors

    def build_for_inference(self) -> None:
        """Create every variable by running one small image through the network."""
        size = 2 * self.stride
        self((tf.zeros([1, size, size, 3]), tf.constant([[size, size]], tf.int32)))
        if self.rcnn_head is not None and not self.rcnn_head.built:  # pragma: no cover
            raise RuntimeError("R-CNN head was not built")
