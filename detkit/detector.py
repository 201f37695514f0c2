"""Inference API: a Detector turns images into boxes in original-image pixels, labels and scores."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
import yaml

from detkit.config import Config, from_dict, merged_dict
from detkit.config.loader import _merge, parse_override
from detkit.datasets.pipeline import input_hw
from detkit.errors import CheckpointError
from detkit.models.faster_rcnn import FasterRCNN, build_detector
from detkit.pretrained.classes import UNUSED_CLASS
from detkit.train import checkpoints


@dataclass
class Detection:
    """One detected object in original-image pixels."""

    bbox: list[float]  # xmin, ymin, xmax, ymax
    label: str
    label_id: int
    prob: float

    def to_json(self) -> dict:
        """Luminoth's object format: bbox, label, prob."""
        return {"bbox": [round(v, 2) for v in self.bbox], "label": self.label, "prob": round(self.prob, 4)}


def load_run_config(run_dir: str, overrides: Iterable[str] = ()) -> Config:
    """The config a run was trained with, plus command-line overrides."""
    path = os.path.join(run_dir, checkpoints.CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read run config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise CheckpointError(f"{path}{where}: cannot read run config ({problem}); restore the config.yml the "
                              "run was trained with") from None
    data = _merge(merged_dict(), data)
    for item in overrides:
        data = _merge(data, parse_override(item))
    return from_dict(data)


def load_class_names(run_dir: str) -> list[str]:
    """The class map saved with a run."""
    path = os.path.join(run_dir, checkpoints.CLASSES_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            names = json.load(fh)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read class map ({exc.strerror or exc}); restore the classes.json "
                              "the run was trained with") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot read class map ({str(exc).splitlines()[0]}); restore the "
                              "classes.json the run was trained with") from None
    if not isinstance(names, list) or not names:
        raise CheckpointError(f"{path}: expected a non-empty list of class names")
    return names


class Detector:
    """A trained Faster R-CNN ready for images: `Detector.from_checkpoint(run_dir).predict(image)`."""

    def __init__(self, model: FasterRCNN, config: Config, class_names: Sequence[str]):
        self.model = model
        self.config = config
        self.class_names = list(class_names)
        image_cfg = config.dataset.image

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def infer(image):
            hw = tf.shape(image)[:2]
            new_hw = input_hw(hw, image_cfg.min_size, image_cfg.max_size, image_cfg.size_rounding)
            resized = tf.image.resize(tf.cast(image, tf.float32), new_hw)
            out = model((resized[None], new_hw[None]), training=False)
            n = out["num_detections"][0]
            ratio = tf.cast(hw, tf.float32) / tf.cast(new_hw, tf.float32)
            boxes = out["boxes"][0, :n] * tf.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
            return boxes, out["scores"][0, :n], out["labels"][0, :n]

        self._infer = infer

    @classmethod
    def from_checkpoint(cls, path: str, overrides: Iterable[str] = ()) -> "Detector":
        """Rebuild the model from a run's config and load its newest (or the given) checkpoint."""
        resolved = checkpoints.resolve(path)
        config = load_run_config(resolved.run_dir, overrides)
        names = load_class_names(resolved.run_dir)
        model = build_detector(config.model, len(names))
        model.build_for_inference()
        checkpoints.restore_model(model, resolved.prefix)
        detector = cls(model, config, names)
        detector.checkpoint = resolved
        return detector

    def predict(self, image: np.ndarray, min_prob: Optional[float] = None,
                max_detections: Optional[int] = None, only_classes: Optional[Iterable[str]] = None,
                ignore_classes: Optional[Iterable[str]] = None) -> list[Detection]:
        """Detections for one RGB uint8 image [H, W, 3], best first, filtered as asked."""
        min_prob = self.config.predict.min_prob if min_prob is None else min_prob
        max_detections = self.config.predict.max_detections if max_detections is None else max_detections
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = image[..., :3].astype(np.uint8, copy=False)
        boxes, scores, labels = (t.numpy() for t in self._infer(tf.convert_to_tensor(image)))
        only = set(only_classes) if only_classes else None
        ignore = set(ignore_classes or ()) | {UNUSED_CLASS}
        out = []
        for box, score, label in zip(boxes, scores, labels):
            name = self.class_names[int(label) - 1]
            if score < min_prob or name in ignore or (only is not None and name not in only):
                continue
            out.append(Detection([float(v) for v in box], name, int(label), float(score)))
            if len(out) >= max_detections:
                break
        return out
