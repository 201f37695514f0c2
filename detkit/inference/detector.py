"""Detector: a trained Faster R-CNN that turns images into labelled boxes in original-image pixels.

    from detkit import Detector
    detector = Detector.from_checkpoint("jobs/my-run")      # a run, a ckpt-N prefix or a packed .tar
    detections = detector.predict(image)                    # one RGB uint8 [H, W, 3] image, or a list of them
"""
from __future__ import annotations

# Lazy imports: detkit.inference.openvino (which builds on this module) when an OpenVINO export is loaded.

from typing import Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from detkit.config import Config
from detkit.inference.detections import Detection, filter_detections
from detkit.models.build import build_detector
from detkit.models.faster_rcnn import FasterRCNN, detections_in_order
from detkit.runs import (ResolvedCheckpoint, checkpoint_source, exported_model, load_class_names, load_run_config,
                         resolve)
from detkit.runs.pack import is_packed, read_manifest
from detkit.runs.restore import restore_model

Image = Union[np.ndarray, "PIL.Image.Image"]  # noqa: F821


def as_rgb_array(image: Image) -> np.ndarray:
    """An RGB uint8 [H, W, 3] array from a grey, RGB or RGBA array or Pillow image."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3].astype(np.uint8, copy=False)


class Detector:
    """A trained Faster R-CNN ready for images: `Detector.from_checkpoint(run_dir).predict(image)`."""

    checkpoint: Optional[ResolvedCheckpoint] = None

    def __init__(self, model: FasterRCNN, config: Config, class_names: Sequence[str]):
        self.model = model
        self.config = config
        self.class_names = list(class_names)

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def infer(image):
            out = model({"image": image[None], "image_hw": tf.shape(image)[None, :2]}, training=False)
            return detections_in_order(out, 0)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                      tf.TensorSpec([None, 2], tf.int32)])
        def infer_batch(images, image_hw):
            return model({"image": images, "image_hw": image_hw}, training=False)

        self._infer = infer
        self._infer_batch = infer_batch

    @classmethod
    def from_checkpoint(cls, path: str, overrides: Iterable[str] = ()) -> "Detector":
        """Rebuild the model from a run's config and load its newest (or the given) checkpoint.

        `path` is a run directory, a RUN/checkpoints/ckpt-N prefix, a file of `detkit checkpoint pack`
        (unpacked to a temporary directory while loading; `checkpoint.run_dir` is then the file), or a directory of
        `detkit checkpoint export --format openvino` (an OpenVINODetector).
        """
        if exported_model(path) is not None:
            from detkit.inference.openvino import OpenVINODetector  # it imports this module

            return OpenVINODetector(path, overrides)
        if is_packed(path):
            manifest = read_manifest(path)
            with checkpoint_source(path) as unpacked:
                detector = cls.from_checkpoint(unpacked, overrides)
            detector.checkpoint = ResolvedCheckpoint(run_dir=path, prefix=f"{path}:{manifest.get('checkpoint')}",
                                                     step=int(manifest.get("step", 0)))
            return detector
        resolved = resolve(path)
        config = load_run_config(resolved.run_dir, overrides)
        names = load_class_names(resolved.run_dir)
        model = build_detector(config, len(names))
        restore_model(model, resolved.prefix)
        detector = cls(model, config, names)
        detector.checkpoint = resolved
        return detector

    def predict(self, images: Union[Image, Sequence[Image]], min_prob: Optional[float] = None,
                max_detections: Optional[int] = None, only_classes: Optional[Iterable[str]] = None,
                ignore_classes: Optional[Iterable[str]] = None,
                batch_size: int = 1) -> Union[list[Detection], list[list[Detection]]]:
        """Detections for one RGB uint8 image [H, W, 3] (or a list of them: one list each), best first.

        With `batch_size` > 1 a list goes through the model `batch_size` images at a time, padded to a common
        size as in evaluation; zero padding can move scores of boxes at the bottom/right border very slightly,
        so batch_size 1 (the default) is what gives exactly the single-image results.
        """
        single = not isinstance(images, (list, tuple))
        arrays = [as_rgb_array(im) for im in ([images] if single else images)]
        filters = dict(min_prob=self.config.predict.min_prob if min_prob is None else min_prob,
                       max_detections=self.config.predict.max_detections if max_detections is None
                       else max_detections, only_classes=only_classes, ignore_classes=ignore_classes)
        results: list[list[Detection]] = []
        step = max(1, batch_size)
        for start in range(0, len(arrays), step):
            chunk = arrays[start:start + step]
            outputs = ([self._raw_one(chunk[0])] if len(chunk) == 1 else self._raw_padded(chunk))
            results += [filter_detections(b, s, lab, self.class_names, **filters) for b, s, lab in outputs]
        return results[0] if single else results

    def raw_detections(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (image pixels), scores and 1-based labels of one RGB uint8 image, best first, before filtering."""
        return self._raw_one(image)

    def _raw_one(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and labels of one image before filtering."""
        boxes, scores, labels = self._infer(tf.convert_to_tensor(image))
        return boxes.numpy(), scores.numpy(), labels.numpy()

    def _raw_padded(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Boxes, scores and labels of several images from one model call on a zero-padded batch."""
        height = max(im.shape[0] for im in images)
        width = max(im.shape[1] for im in images)
        batch = np.zeros((len(images), height, width, 3), np.uint8)
        for i, image in enumerate(images):
            batch[i, :image.shape[0], :image.shape[1]] = image
        out = self._infer_batch(tf.constant(batch), tf.constant([im.shape[:2] for im in images], tf.int32))
        return [tuple(t.numpy() for t in detections_in_order(out, i)) for i in range(len(images))]
