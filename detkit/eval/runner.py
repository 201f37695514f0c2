"""Run a model over a TFRecord split and score its detections (VOC mAP + COCO metrics)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import tensorflow as tf

from detkit.config import Config
from detkit.datasets import pipeline
from detkit.datasets.tfrecord import data_loss_error
from detkit.eval.class_map import apply_label_map
from detkit.eval.metrics import Detections, GroundTruth, evaluate
from detkit.eval.tensorboard import write_curves_and_confusion
from detkit.inference.detector import Detector
from detkit.models.faster_rcnn import FasterRCNN, detections_in_order
from detkit.utils.progress import progress


def collect(model: Union[FasterRCNN, Detector], cfg: Config, dataset_dir: str, split: str,
            show_progress: bool = True, limit: Optional[int] = None,
            label_map: Optional[np.ndarray] = None) -> tuple[list[GroundTruth], list[Detections]]:
    """Ground truth and detections of every image of a split, in original-image pixels, from a model or a Detector
    (its TensorFlow model, or the runtime of an export such as OpenVINO's).

    `label_map` (model label -> dataset label, see eval/class_map.py) relabels the detections.
    """
    ds = pipeline.evaluation_dataset(cfg.dataset, dataset_dir, split, batch_size=1)
    spec = ds.element_spec
    if isinstance(model, Detector) and model.model is not None:
        model = model.model
    if isinstance(model, Detector):
        detector = model

        def infer(images, image_hw):
            return detector.raw_detections(_pixels(images, image_hw))
    else:
        @tf.function(input_signature=[tf.TensorSpec(spec["image"].shape, tf.float32),
                                      tf.TensorSpec(spec["image_hw"].shape, tf.int32)])
        def detect(images, image_hw):
            out = model({"image": images, "image_hw": image_hw}, training=False)
            return detections_in_order(out, 0)

        def infer(images, image_hw):
            return tuple(t.numpy() for t in detect(images, image_hw))

    total = pipeline.count_records(dataset_dir, split)
    gts, dets = [], []
    bar = progress(total=total if limit is None else min(total, limit), desc=f"eval {split}", unit="img",
                   disable=not show_progress)
    try:
        for i, batch in enumerate(_batches(ds, dataset_dir, split)):
            if limit is not None and i >= limit:
                break
            gt, det = _score_one(infer, batch, i, label_map)
            gts.append(gt)
            dets.append(det)
            bar.update(1)
    finally:
        bar.close()
    return gts, dets


def _batches(ds: tf.data.Dataset, dataset_dir: str, split: str):
    """The batches of `ds`; a truncated or corrupt shard becomes a DatasetError naming it."""
    iterator = iter(ds)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.DataLossError as exc:

            raise data_loss_error(dataset_dir, split, exc) from None
        yield batch


def _pixels(images: tf.Tensor, image_hw: tf.Tensor) -> np.ndarray:
    """The one image of an evaluation batch as RGB uint8 [H, W, 3], its padding cut off."""
    h, w = (int(v) for v in image_hw[0])
    return np.clip(np.round(images[0, :h, :w].numpy()), 0, 255).astype(np.uint8)


def _ground_truth(batch: dict, i: int) -> GroundTruth:
    """The ground truth of a batch of one image, in original-image pixels; its image_id is "i:filename"."""
    orig = batch["original_hw"].numpy()[0]
    name = batch["filename"].numpy()[0].decode("utf-8", "replace")
    labels = batch["labels"].numpy()[0]
    keep = labels > 0
    return GroundTruth(
        image_id=f"{i}:{name}", boxes=batch["boxes"].numpy()[0][keep].astype(np.float64), labels=labels[keep],
        difficult=batch["difficult"].numpy()[0][keep], iscrowd=batch["is_crowd"].numpy()[0][keep],
        width=int(orig[1]), height=int(orig[0]),
    )


def scored(gt: GroundTruth, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
           label_map: Optional[np.ndarray] = None) -> Detections:
    """A model's raw detections of the image of `gt`, relabelled by `label_map` (see eval/class_map.py)."""
    boxes, det_labels, scores = apply_label_map(label_map, boxes, labels, scores)
    return Detections(image_id=gt.image_id, boxes=boxes.astype(np.float64), labels=det_labels, scores=scores)


def _score_one(infer, batch: dict, i: int, label_map: Optional[np.ndarray]) -> tuple[GroundTruth, Detections]:
    """Ground truth and detections of one batch of one image, in original-image pixels."""
    boxes, scores, labels_out = infer(batch["image"], batch["image_hw"])
    gt = _ground_truth(batch, i)
    return gt, scored(gt, boxes, scores, labels_out, label_map)


def photos_of_split(cfg: Config, dataset_dir: str, split: str, limit: Optional[int] = None,
                    show_progress: bool = True) -> list[tuple[np.ndarray, GroundTruth]]:
    """`limit` photos spread over a split (every (records // limit)-th, so that a split sorted by class or by
    source gives all of them), or all, as RGB uint8 [H, W, 3] arrays, each with its ground truth."""
    total = pipeline.count_records(dataset_dir, split)
    every = max(1, total // limit) if limit else 1
    ds = pipeline.evaluation_dataset(cfg.dataset, dataset_dir, split, batch_size=1, every=every)
    kept = len(range(0, total, every))
    out = []
    with progress(total=kept if limit is None else min(kept, limit), desc=f"read {split}", unit="img",
                  disable=not show_progress) as bar:
        for i, batch in enumerate(_batches(ds, dataset_dir, split)):
            if limit is not None and i >= limit:
                break
            out.append((_pixels(batch["image"], batch["image_hw"]), _ground_truth(batch, i * every)))
            bar.update(1)
    return out


def evaluate_model(model: FasterRCNN, cfg: Config, dataset_dir: str, split: str, class_names: list[str],
                   show_progress: bool = True, label_map: Optional[np.ndarray] = None) -> dict:
    """VOC and COCO metrics of `model` on a split whose classes are `class_names` (see `collect` for label_map)."""
    gts, dets = collect(model, cfg, dataset_dir, split, show_progress, label_map=label_map)
    return evaluate(gts, dets, class_names, iou_threshold=cfg.eval.iou_threshold)


def evaluate_and_summarise(model: FasterRCNN, cfg: Config, dataset_dir: str, split: str, class_names: list[str],
                           writer, step: int, prefix: str = "eval/") -> dict:
    """`evaluate_model` (no progress bar), also writing its PR curves and confusion matrix to `writer`."""
    gts, dets = collect(model, cfg, dataset_dir, split, show_progress=False)
    write_curves_and_confusion(writer, step, gts, dets, class_names, prefix)
    return evaluate(gts, dets, class_names, iou_threshold=cfg.eval.iou_threshold)
