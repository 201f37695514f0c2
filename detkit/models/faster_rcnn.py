"""The Faster R-CNN Keras model: base network -> RPN -> proposals -> RoI pooling -> R-CNN -> detections."""
from __future__ import annotations

import keras
import tensorflow as tf

from detkit.config.schema import ModelConfig
from detkit.models import anchors as anchor_ops
from detkit.models import postprocess, proposals, rcnn, roi_pooling, rpn
from detkit.models.base_networks import build_base_network


def pad_ground_truth(gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                     gt_valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """At least one ground-truth slot per image: a batch of only negative images has none, and matching needs
    one, so an invalid one is added (every candidate is then background)."""
    pad = tf.maximum(1 - tf.shape(gt_boxes)[1], 0)
    return (tf.pad(gt_boxes, [[0, 0], [0, pad], [0, 0]]),
            tf.pad(gt_labels, [[0, 0], [0, pad]], constant_values=-1),
            tf.pad(gt_valid, [[0, 0], [0, pad]], constant_values=False))


class DetectorModel(keras.Model):
    """What every detkit architecture shares: L2 decay and the training losses over its `rpn_stage`."""

    def decayed_variables(self) -> list:
        """The trainable conv/dense kernels, which L2 weight decay applies to (biases and norms are not decayed)."""
        return [v for v in self.trainable_variables if "kernel" in v.path]

    def l2_penalty(self) -> tf.Tensor:
        """0.5 * sum of squared trainable conv/dense kernels."""
        kernels = self.decayed_variables()
        if not kernels:
            return tf.constant(0.0)
        return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])

    def rpn_stage(self, images: tf.Tensor, image_hw: tf.Tensor, training: bool) -> tuple:
        """(features for the R-CNN head, RPN logits, RPN deltas, anchors), as `_proposals` and `_rcnn` take them."""
        raise NotImplementedError

    @staticmethod
    def flat_rpn(logits, deltas, anchors) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """RPN outputs and anchors as single tensors over all anchors (a pyramid's levels are lists)."""
        if isinstance(anchors, (list, tuple)):
            return tf.concat(logits, 1), tf.concat(deltas, 1), tf.concat(anchors, 0)
        return logits, deltas, anchors

    def compute_losses(self, images: tf.Tensor, image_hw: tf.Tensor, gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                       gt_valid: tf.Tensor, training: bool = True, include_l2: bool = True) -> dict[str, tf.Tensor]:
        """The four weighted losses, L2 (unless `include_l2` is false) and their total for a padded batch."""
        image_hw = tf.cast(image_hw, tf.float32)
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(gt_boxes, gt_labels, gt_valid)
        w = self.cfg.loss_weights
        features, logits, deltas, anchors = self.rpn_stage(images, image_hw, training=training)
        # torchvision matches and samples over all levels' anchors at once.
        all_logits, all_deltas, all_anchors = self.flat_rpn(logits, deltas, anchors)
        targets = rpn.rpn_targets(all_anchors, image_hw, gt_boxes, gt_valid, self.cfg.rpn)
        rpn_cls, rpn_box = rpn.rpn_loss(all_logits, all_deltas, targets, self.cfg.rpn.smooth_l1_beta)
        losses = {"rpn_class": w.rpn_class * rpn_cls, "rpn_box": w.rpn_box * rpn_box}
        if self.rcnn_head is not None:
            boxes, _, valid = self._proposals(logits, deltas, anchors, image_hw, training=True)
            t = rcnn.rcnn_targets(boxes, valid, gt_boxes, gt_labels, gt_valid, self.cfg.rcnn)
            # Empty slots come last and add nothing to the loss: the head runs only on as many RoIs as the
            # fullest image sampled, as torchvision samples only the proposals that exist.
            count = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(t["labels"] >= 0, tf.int32), axis=1)), 1)
            t = {k: v[:, :count] for k, v in t.items()}
            cls_logits, box_deltas = self._rcnn(features, tf.stop_gradient(t["boxes"]), training=training)
            r_cls, r_box = rcnn.rcnn_loss(
                tf.reshape(cls_logits, [-1, self.num_classes + 1]), tf.reshape(box_deltas, [-1, self.num_classes, 4]),
                tf.reshape(t["labels"], [-1]), tf.reshape(t["box_targets"], [-1, 4]), self.cfg.rcnn.smooth_l1_beta,
            )
            losses["rcnn_class"] = w.rcnn_class * r_cls
            losses["rcnn_box"] = w.rcnn_box * r_box
        if include_l2:
            losses["l2"] = w.l2 * self.l2_penalty()
        losses["total"] = tf.add_n(list(losses.values()))
        return losses


class FasterRCNN(DetectorModel):
    """Two-stage detector built entirely from the `model` config section and a class count."""

    def __init__(self, cfg: ModelConfig, num_classes: int, **kwargs):
        super().__init__(name="faster_rcnn", **kwargs)
        self.cfg = cfg
        self.num_classes = num_classes
        base = build_base_network(cfg.base_network)
        # Only the C4 design runs conv5 on the RoIs; with the FC head the ResNet's conv5 is simply unused.
        tail = base.tail if cfg.rcnn.head == "conv5" else None
        self.backbone = base.features
        self.preprocess = base.preprocess
        self.stride = base.stride
        # A ResNet's conv5 starts with a stride-2 block, which replaces the 2x2 max-pool.
        self.pool_stride = 1 if tail is not None else cfg.roi_pooling.pool_stride
        self.rpn_head = rpn.RPNHead(cfg.rpn.channels,
                                    anchor_ops.num_anchors_per_location(cfg.anchors.sizes, cfg.anchors.ratios),
                                    name="rpn")
        self.rcnn_head = (
            rcnn.RCNNHead(num_classes, cfg.rcnn.fc_sizes, cfg.rcnn.dropout, tail=tail,
                          reduce_channels=cfg.rcnn.reduce_channels, name="rcnn")
            if cfg.rcnn.enabled else None
        )

    # ------------------------------------------------------------ shared pieces
    def _backbone_and_rpn(self, images: tf.Tensor, training: bool):
        """Features, RPN outputs and the anchors of this feature map."""
        features = self.backbone(self.preprocess(images), training=training)
        logits, deltas = self.rpn_head(features)
        # Under a mixed-precision policy the convs run in float16/bfloat16; proposals, losses and NMS stay float32.
        logits, deltas = tf.cast(logits, tf.float32), tf.cast(deltas, tf.float32)
        anchors = anchor_ops.generate_anchors(tf.shape(features)[1:3], self.stride,
                                              self.cfg.anchors.sizes, self.cfg.anchors.ratios)
        return features, logits, deltas, anchors

    def _proposals(self, logits, deltas, anchors, image_hw, training: bool):
        """Proposals with the train or test top-N settings."""
        p = self.cfg.rpn.train_proposals if training else self.cfg.rpn.test_proposals
        return proposals.generate_proposals(
            tf.stop_gradient(logits), tf.stop_gradient(deltas), anchors, image_hw,
            p.pre_nms_top_n, p.post_nms_top_n, self.cfg.rpn.nms_iou, self.cfg.rpn.min_box_size,
        )

    def _rcnn(self, features, rois, training: bool):
        """R-CNN head on RoIs [B, R, 4] -> logits [B, R, C+1], deltas [B, R, C, 4]."""
        reduced = tf.cast(self.rcnn_head.reduce_features(features), tf.float32)
        pooled = roi_pooling.roi_pool(reduced, rois, self.stride, self.cfg.roi_pooling.crop_size, self.pool_stride)
        logits, deltas = self.rcnn_head(pooled, training=training)
        logits, deltas = tf.cast(logits, tf.float32), tf.cast(deltas, tf.float32)
        batch = tf.shape(rois)[0]
        num = tf.shape(rois)[1]
        return (tf.reshape(logits, [batch, num, self.num_classes + 1]),
                tf.reshape(deltas, [batch, num, self.num_classes, 4]))

    # ------------------------------------------------------------ inference
    def call(self, inputs, training: bool = False):
        """(images [B, H, W, 3] float 0-255, image_hw [B, 2] int) -> padded detections in resized pixels."""
        images, image_hw = inputs
        image_hw = tf.cast(image_hw, tf.float32)
        features, logits, deltas, anchors = self._backbone_and_rpn(images, training=False)
        boxes, scores, valid = self._proposals(logits, deltas, anchors, image_hw, training=False)
        if self.rcnn_head is None:
            return postprocess.detections_from_rpn(boxes, scores, valid, self.cfg.postprocess)
        cls_logits, box_deltas = self._rcnn(features, boxes, training=False)
        out = postprocess.detections_from_rcnn(boxes, valid, cls_logits, box_deltas, image_hw,
                                               self.cfg.rcnn.box_weights, self.cfg.postprocess)
        out["proposals"] = boxes
        out["proposal_scores"] = scores
        return out

    # ------------------------------------------------------------ training
    def rpn_stage(self, images: tf.Tensor, image_hw: tf.Tensor, training: bool) -> tuple:
        """(features for the R-CNN head, RPN logits, RPN deltas, anchors), as `_proposals` and `_rcnn` take them."""
        del image_hw  # one stride-16 map needs no padded size
        return self._backbone_and_rpn(images, training=training)

    def build_for_inference(self) -> None:
        """Create every variable by running one tiny image through the network."""
        size = 4 * self.stride
        self((tf.zeros([1, size, size, 3]), tf.constant([[size, size]], tf.int32)))
        if self.rcnn_head is not None and not self.rcnn_head.built:  # pragma: no cover
            raise RuntimeError("R-CNN head was not built")


def build_detector(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """The detector model.architecture names: FasterRCNN (single_level) or FPNFasterRCNN (fpn)."""
    if cfg.architecture == "fpn":
        from detkit.models.fpn_rcnn import FPNFasterRCNN

        return FPNFasterRCNN(cfg, num_classes)
    return FasterRCNN(cfg, num_classes)
