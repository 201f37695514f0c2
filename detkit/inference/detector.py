"""Detector: a trained Faster R-CNN that turns images into labelled boxes in original-image pixels.

    from detkit import Detector
    detector = Detector.from_checkpoint("jobs/my-run")      # a run, a ckpt-N prefix or a packed .tar
    detections = detector.predict(image)                    # one RGB uint8 [H, W, 3] image, or a list of them
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import numpy as np

from detkit.config import Config
from detkit.errors import ConfigError
from detkit.inference.detections import Detection, filter_detections
from detkit.inference.runtimes import OpenVINORuntime, Raw, TensorFlowRuntime
from detkit.models.build import build_detector
from detkit.models.faster_rcnn import FasterRCNN
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
    """A trained Faster R-CNN ready for images: `Detector.from_checkpoint(run_dir).predict(image)`.

    It holds the run's config and class names and a runtime (runtimes.py) that runs the network: TensorFlow on
    the Keras model, or OpenVINO on an exported model directory.
    """

    def __init__(self, runtime: Union[TensorFlowRuntime, OpenVINORuntime], config: Config,
                 class_names: Sequence[str], checkpoint: Optional[ResolvedCheckpoint] = None):
        self.runtime = runtime
        self.config = config
        self.class_names = list(class_names)
        self.checkpoint = checkpoint

    @property
    def model(self) -> Optional[FasterRCNN]:
        """The Keras model TensorFlow runs, or None for an exported model."""
        return self.runtime.model

    @classmethod
    def from_model(cls, model: FasterRCNN, config: Config, class_names: Sequence[str]) -> "Detector":
        """A Detector of a Keras model in memory, run by TensorFlow."""
        return cls(TensorFlowRuntime(model), config, class_names)

    @classmethod
    def from_checkpoint(cls, path: str, overrides: Iterable[str] = ()) -> "Detector":
        """Rebuild the model from a run's config and load its newest (or the given) checkpoint.

        `path` is a run directory, a RUN/checkpoints/ckpt-N prefix, a file of `detkit checkpoint pack`
        (unpacked to a temporary directory while loading; `checkpoint.run_dir` is then the file), or a directory of
        `detkit checkpoint export --format openvino` (run by OpenVINO).
        """
        manifest = exported_model(path)
        if manifest is not None:
            return cls.from_export(path, manifest, overrides)
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
        return cls(TensorFlowRuntime(model), config, names, resolved)

    @classmethod
    def from_export(cls, directory: str, manifest: dict, overrides: Iterable[str] = (),
                    threads: int = 0) -> "Detector":
        """A Detector of an OpenVINO export (`manifest` is its export.json); model.* and dataset.image.*
        overrides are refused, the graph being fixed."""
        fixed = [o for o in overrides if o.split("=", 1)[0].strip().startswith(("model.", "dataset.image."))]
        if fixed:
            raise ConfigError(f"{fixed[0]}: an exported model's graph is fixed; only keys such as predict.* and "
                              "eval.* can be overridden (export the run again with the new value)")
        runtime = OpenVINORuntime.load(directory, threads)
        checkpoint = ResolvedCheckpoint(run_dir=directory, prefix=runtime.path, step=int(manifest.get("step", 0)))
        return cls(runtime, load_run_config(directory, overrides), load_class_names(directory), checkpoint)

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
            outputs = ([self.runtime.one(chunk[0])] if len(chunk) == 1 else self.runtime.padded(chunk))
            results += [filter_detections(b, s, lab, self.class_names, **filters) for b, s, lab in outputs]
        return results[0] if single else results

    def raw_detections(self, image: np.ndarray) -> Raw:
        """Boxes (image pixels), scores and 1-based labels of one RGB uint8 image, best first, before filtering."""
        return self.runtime.one(image)
