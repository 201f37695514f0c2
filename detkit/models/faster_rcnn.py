"""The Faster R-CNN: one model for every architecture, assembled from parts by `detkit.models.build`.

    input transform -> body (-> FPN) -> RPN head on every level -> anchors -> proposals
        -> pooler -> R-CNN head -> detections, mapped back to the image's own pixels

The weight-owning Keras layers are attributes (backbone, fpn, rpn_head, rcnn_head: their names are the
checkpoint's); the rest are plain settings (transform, anchor generator, samplers, proposal and detection
settings, pooler), each a piece with its own module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import keras
import tensorflow as tf

from detkit.models import postprocess, proposals, rcnn, rpn
from detkit.models.anchors import AnchorGenerator
from detkit.models.fold import inference_form
from detkit.models.matching import Sampling
from detkit.models.postprocess import DetectionSettings
from detkit.models.proposals import ProposalSettings
from detkit.models.tiles import Tiling, cut_tiles, merge_detections, tile_grid
from detkit.models.transform import InputTransform

Pooler = Callable[[list, tf.Tensor], tf.Tensor]


def pad_ground_truth(gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                     gt_valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """At least one ground-truth slot per image: a batch of only negative images has none, and matching needs
    one, so an invalid one is added (every candidate is then background)."""
    pad = tf.maximum(1 - tf.shape(gt_boxes)[1], 0)
    return (tf.pad(gt_boxes, [[0, 0], [0, pad], [0, 0]]),
            tf.pad(gt_labels, [[0, 0], [0, pad]], constant_values=-1),
            tf.pad(gt_valid, [[0, 0], [0, pad]], constant_values=False))


@dataclass(frozen=True)
class RPNSettings:
    """The RPN's parts that own no weights: anchors, target sampling, proposals per phase, loss."""

    anchors: AnchorGenerator
    sampling: Sampling
    low_quality_matches: bool
    allowed_border: float
    train_proposals: ProposalSettings
    test_proposals: ProposalSettings
    smooth_l1_beta: float


@dataclass(frozen=True)
class RoIHeadSettings:
    """The second stage's parts that own no weights: pooler, RoI sampling, box coding, loss."""

    pooler: Pooler
    sampling: Sampling
    add_gt_boxes: bool
    box_weights: tuple[float, float, float, float]
    smooth_l1_beta: float


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four losses and of L2 weight decay."""

    rpn_class: float = 1.0
    rpn_box: float = 1.0
    rcnn_class: float = 1.0
    rcnn_box: float = 1.0
    l2: float = 0.0


class FasterRCNN(keras.Model):
    """Images in, detections out (inference), or losses (training): `model(batch, training=...)`.

    Inference: batch {"image": [B, H, W, 3] 0-255, zero-padded, "image_hw": [B, 2] each image's own size} ->
    {"boxes" [B, N, 4] in the images' own pixels, "scores", "labels" (1-based), "num_detections"}.
    Training: the batch of the training pipeline (images already resized by it with `transform`, boxes in those
    pixels, labels -1-padded) -> the weighted losses and their total.
    """

    def __init__(self, transform: InputTransform, backbone: keras.Model, fpn: Optional[keras.layers.Layer],
                 rpn_head: rpn.RPNHead, rpn_settings: RPNSettings, rcnn_head: Optional[rcnn.RCNNHead],
                 roi_settings: Optional[RoIHeadSettings], detections: DetectionSettings, num_classes: int,
                 loss_weights: LossWeights = LossWeights(), tiling: Optional[Tiling] = None, **kwargs):
        super().__init__(name="faster_rcnn", **kwargs)
        self.transform = transform
        self.tiling = tiling
        # Checkpoints name the layers by these attributes, in this order.
        self.backbone = backbone
        self.fpn = fpn
        self.rpn_head = rpn_head
        self.rcnn_head = rcnn_head
        self.rpn_settings = rpn_settings
        self.roi_settings = roi_settings
        self.detections = detections
        self.num_classes = num_classes
        self.loss_weights = loss_weights

    # ------------------------------------------------------------ the forward pass
    def features(self, images: tf.Tensor, image_hw: tf.Tensor, training: bool = False,
                 whole: bool = False) -> tuple[list, tf.Tensor]:
        """(feature maps finest first, the padded input's (height, width)) of resized 0-255 images (`whole`: each
        fills the tensor, as resize_batch gives one image)."""
        x = self.transform.batch(images, image_hw, whole)
        body = self.backbone if training else inference_form(self.backbone)
        maps = body(x, training=training)
        maps = list(maps) if isinstance(maps, (list, tuple)) else [maps]
        if self.fpn is not None:
            maps = self.fpn(maps)
        return maps, tf.shape(x)[1:3]

    def rpn_outputs(self, maps: list, padded_hw: tf.Tensor) -> tuple[list, list, list]:
        """Per level: objectness logits [B, N_l], deltas [B, N_l, 4] (float32) and anchors [N_l, 4]."""
        logits, deltas = [], []
        for features in maps:
            lg, dl = self.rpn_head(features)
            # Under a mixed-precision policy the convs run in float16/bfloat16; proposals, losses, NMS stay float32.
            logits.append(tf.cast(lg, tf.float32))
            deltas.append(tf.cast(dl, tf.float32))
        anchors = self.rpn_settings.anchors([tf.shape(m)[1:3] for m in maps], padded_hw)
        return logits, deltas, anchors

    def proposals(self, logits: list, deltas: list, anchors: list, image_hw: tf.Tensor,
                  training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(boxes [B, P, 4], objectness [B, P], valid [B, P]) with the training or inference settings."""
        p = self.rpn_settings.train_proposals if training else self.rpn_settings.test_proposals
        return proposals.generate_proposals(
            [tf.stop_gradient(x) for x in logits], [tf.stop_gradient(x) for x in deltas], anchors, image_hw,
            p.pre_nms_top_n, p.post_nms_top_n, p.nms_iou, p.min_size, p.score_threshold)

    def box_head(self, maps: list, rois: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The R-CNN head on RoIs [B, R, 4] -> class logits [B, R, C+1], class-specific deltas [B, R, C, 4]."""
        pooled_from = [tf.cast(self.rcnn_head.reduce_features(m), tf.float32) for m in maps]
        pooled = self.roi_settings.pooler(pooled_from, rois)
        logits, deltas = self.rcnn_head(pooled, training=training)
        batch, num = tf.shape(rois)[0], tf.shape(rois)[1]
        return (tf.reshape(tf.cast(logits, tf.float32), [batch, num, self.num_classes + 1]),
                tf.reshape(tf.cast(deltas, tf.float32), [batch, num, self.num_classes, 4]))

    def stages(self, images: tf.Tensor, image_hw: tf.Tensor, whole: bool = False) -> dict:
        """Inference on resized images with every intermediate result (pyramid, objectness, proposals), all in
        the resized images' pixels (`whole`: each image fills the tensor, no padding to mask)."""
        image_hw = tf.cast(image_hw, tf.float32)
        maps, padded_hw = self.features(images, image_hw, whole=whole)
        logits, deltas, anchors = self.rpn_outputs(maps, padded_hw)
        boxes, scores, valid = self.proposals(logits, deltas, anchors, image_hw, training=False)
        if self.rcnn_head is None:
            out = postprocess.detections_from_rpn(boxes, scores, valid, self.detections)
        else:
            # Valid proposals come first: the head runs only on as many rows as the fullest image has,
            # as torchvision runs it only on the proposals it kept.
            count = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)), 1)
            rois, rois_valid = boxes[:, :count], valid[:, :count]
            cls_logits, box_deltas = self.box_head(maps, rois, training=False)
            out = postprocess.detections_from_rcnn(rois, rois_valid, cls_logits, box_deltas, image_hw,
                                                   self.roi_settings.box_weights, self.detections)
        out.update(features=maps, objectness=logits, proposals=boxes, proposal_scores=scores, proposal_valid=valid)
        return out

    def detect(self, images: tf.Tensor, image_hw: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections of original images [B, H, W, 3] (0-255, zero-padded) of sizes image_hw [B, 2], in their pixels:
        of the whole images resized, or of their tiles and (optionally) the whole images, merged."""
        if self.tiling is None:
            return self._detect_resized(images, image_hw)
        spec = {"boxes": tf.TensorSpec([self.detections.max_total, 4], tf.float32),
                "scores": tf.TensorSpec([self.detections.max_total], tf.float32),
                "labels": tf.TensorSpec([self.detections.max_total], tf.int32),
                "num_detections": tf.TensorSpec([], tf.int32)}
        return tf.map_fn(lambda args: self._detect_tiled(*args), (images, tf.cast(image_hw, tf.int32)),
                         fn_output_signature=spec)

    def _detect_resized(self, images: tf.Tensor, image_hw: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections of whole images, each resized by the input transform, in their own pixels."""
        resized, resized_hw = self.transform.resize_batch(images, image_hw)
        out = self.stages(resized, resized_hw, whole=self.transform.resizes_whole(images))
        boxes = self.transform.boxes_to_original(out["boxes"], resized_hw, image_hw)
        return {"boxes": boxes, "scores": out["scores"], "labels": out["labels"],
                "num_detections": out["num_detections"]}

    def _detect_tiled(self, image: tf.Tensor, image_hw: tf.Tensor) -> dict[str, tf.Tensor]:
        """One image's detections over its tiles (and the whole image), merged by per-class NMS."""
        t = self.tiling
        offsets = tile_grid(image_hw, t.size, t.overlap)
        tiles, tiles_hw = cut_tiles(image, image_hw, offsets, t.size)
        passes = [self._detect_resized(tiles, tiles_hw)]
        shift = tf.cast(tf.concat([offsets[:, ::-1], offsets[:, ::-1]], axis=1), tf.float32)[:, None, :]
        passes[0]["boxes"] = passes[0]["boxes"] + shift
        if t.whole_image:
            passes.append(self._detect_resized(image[None], image_hw[None]))
        boxes, scores, labels = [], [], []
        for out in passes:
            valid = tf.range(tf.shape(out["scores"])[1])[None, :] < out["num_detections"][:, None]
            boxes.append(tf.reshape(out["boxes"], [-1, 4]))
            scores.append(tf.reshape(tf.where(valid, out["scores"], 0.0), [-1]))
            labels.append(tf.reshape(tf.where(valid, out["labels"], 1), [-1]))
        d = self.detections
        return merge_detections(tf.concat(boxes, 0), tf.concat(scores, 0), tf.concat(labels, 0), self.num_classes,
                                d.nms_iou, d.max_per_class, d.max_total)

    def call(self, batch: dict, training: bool = False) -> dict[str, tf.Tensor]:
        """Detections (inference) or losses (training) of a batch; see the class docstring."""
        if training:
            return self.compute_losses(batch["image"], batch["image_hw"], batch["boxes"], batch["labels"],
                                       batch["labels"] > 0)
        return self.detect(batch["image"], batch["image_hw"])

    # ------------------------------------------------------------ training
    def compute_losses(self, images: tf.Tensor, image_hw: tf.Tensor, gt_boxes: tf.Tensor, gt_labels: tf.Tensor,
                       gt_valid: tf.Tensor, training: bool = True, include_l2: bool = True) -> dict[str, tf.Tensor]:
        """The four weighted losses, L2 (unless `include_l2` is false) and their total, for a padded batch of
        resized images with ground truth in their pixels."""
        image_hw = tf.cast(image_hw, tf.float32)
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(gt_boxes, gt_labels, gt_valid)
        w, r = self.loss_weights, self.rpn_settings
        maps, padded_hw = self.features(images, image_hw, training=training)
        logits, deltas, anchors = self.rpn_outputs(maps, padded_hw)
        # torchvision matches and samples over all levels' anchors at once.
        targets = rpn.rpn_targets(tf.concat(anchors, 0), image_hw, gt_boxes, gt_valid, r.sampling,
                                  r.low_quality_matches, r.allowed_border)
        rpn_cls, rpn_box = rpn.rpn_loss(tf.concat(logits, 1), tf.concat(deltas, 1), targets, r.smooth_l1_beta)
        losses = {"rpn_class": w.rpn_class * rpn_cls, "rpn_box": w.rpn_box * rpn_box}
        if self.rcnn_head is not None:
            s = self.roi_settings
            boxes, _, valid = self.proposals(logits, deltas, anchors, image_hw, training=True)
            t = rcnn.rcnn_targets(boxes, valid, gt_boxes, gt_labels, gt_valid, s.sampling, s.box_weights,
                                  s.add_gt_boxes)
            # Empty slots come last and add nothing to the loss: the head runs only on as many RoIs as the
            # fullest image sampled, as torchvision samples only the proposals that exist.
            count = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(t["labels"] >= 0, tf.int32), axis=1)), 1)
            t = {k: v[:, :count] for k, v in t.items()}
            cls_logits, box_deltas = self.box_head(maps, tf.stop_gradient(t["boxes"]), training=training)
            r_cls, r_box = rcnn.rcnn_loss(
                tf.reshape(cls_logits, [-1, self.num_classes + 1]), tf.reshape(box_deltas, [-1, self.num_classes, 4]),
                tf.reshape(t["labels"], [-1]), tf.reshape(t["box_targets"], [-1, 4]), s.smooth_l1_beta,
            )
            losses["rcnn_class"] = w.rcnn_class * r_cls
            losses["rcnn_box"] = w.rcnn_box * r_box
        if include_l2:
            losses["l2"] = w.l2 * self.l2_penalty()
        losses["total"] = tf.add_n(list(losses.values()))
        return losses

    def decayed_variables(self) -> list:
        """The trainable conv/dense kernels, which L2 weight decay applies to (biases and norms are not decayed)."""
        return [v for v in self.trainable_variables if "kernel" in v.path]

    def l2_penalty(self) -> tf.Tensor:
        """0.5 * sum of squared trainable conv/dense kernels."""
        kernels = self.decayed_variables()
        if not kernels:
            return tf.constant(0.0)
        return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])

    # ------------------------------------------------------------ parts
    def class_layers(self) -> list[keras.layers.Layer]:
        """The layers whose shapes depend on the class count (re-initialised when fine-tuning to other classes)."""
        return [] if self.rcnn_head is None else [self.rcnn_head.cls, self.rcnn_head.box]

    def shared_parts(self) -> dict[str, tf.Module]:
        """Every weight-owning part but the class layers, by checkpoint name (for `train.init_from`)."""
        parts = {"backbone": self.backbone, "rpn_head": self.rpn_head}
        if self.fpn is not None:
            parts["fpn"] = self.fpn
        if self.rcnn_head is not None:
            head = {f"fc{i + 1}": fc for i, fc in enumerate(self.rcnn_head.fcs)}
            if self.rcnn_head.tail is not None:
                head["tail"] = self.rcnn_head.tail
            if self.rcnn_head.reduce is not None:
                head["reduce"] = self.rcnn_head.reduce
            parts["rcnn_head"] = tf.train.Checkpoint(**head)
        return parts

    def create_variables(self, side: int = 64) -> None:
        """Create every variable by running one small image through the network."""
        self.stages(tf.zeros([1, side, side, 3]), tf.constant([[side, side]], tf.int32))
        if self.rcnn_head is not None and not self.rcnn_head.built:  # pragma: no cover
            raise RuntimeError("R-CNN head was not built")


def detections_in_order(out: dict[str, tf.Tensor], index: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(boxes [n, 4], scores [n], labels [n]) of image `index` of a detection output, best first."""
    n = out["num_detections"][index]
    return out["boxes"][index, :n], out["scores"][index, :n], out["labels"][index, :n]

