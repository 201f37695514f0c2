"""Export a trained run as a TensorFlow SavedModel that needs nothing but TensorFlow to serve.

Signature `serving_default`:
    input   image_bytes: tf.string scalar, an encoded JPEG/PNG/GIF/BMP (EXIF orientation of JPEGs is applied,
            as `detkit predict` does with Pillow)
    outputs boxes [N, 4] float32 (xmin, ymin, xmax, ymax) in pixels of the upright original image,
            classes [N] int32 (1-based: class_names[classes - 1]), scores [N] float32, labels [N] string,
            num_detections [] int32, image_size [2] int32 (height, width), class_names [C] string
Detections are filtered with predict.min_prob and capped at predict.max_detections of the run config
(or the values given). DIR/assets/ holds config.yml, classes.json and export.json.

    import tensorflow as tf
    serve = tf.saved_model.load(DIR).signatures["serving_default"]
    out = serve(image_bytes=tf.constant(open("photo.jpg", "rb").read()))
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import tensorflow as tf

from detkit.config import dump_yaml
from detkit.errors import CheckpointError, DetkitError
from detkit.inference.decode import decode_image
from detkit.inference.detections import used_classes
from detkit.inference.detector import Detector
from detkit.models.faster_rcnn import detections_in_order
from detkit.runs import exported_model, layout
from detkit.utils import atomic
from detkit.utils.pause import pause_point

SIGNATURE = "serving_default"


@dataclass
class ExportInfo:
    """What `export_saved_model` wrote."""

    output_dir: str
    checkpoint: str
    step: int
    min_prob: float
    max_detections: int


class DetectorModule(tf.Module):
    """The model plus decoding and filtering, as one serving function."""

    def __init__(self, model, class_names: list[str], min_prob: float, max_detections: int):
        super().__init__(name="detkit_detector")
        self.model = model
        self._class_names = list(class_names)
        self._used = tf.constant(used_classes(class_names))
        self._min_prob = float(min_prob)
        self._max_detections = int(max_detections)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        image = decode_image(image_bytes)
        hw = tf.shape(image)[:2]
        out = self.model({"image": image[None], "image_hw": hw[None]}, training=False)
        boxes, scores, labels = detections_in_order(out, 0)
        labels = tf.cast(labels, tf.int32)
        keep = (scores >= self._min_prob) & tf.gather(self._used, labels - 1)
        boxes = tf.boolean_mask(boxes, keep)[: self._max_detections]
        scores = tf.boolean_mask(scores, keep)[: self._max_detections]
        labels = tf.boolean_mask(labels, keep)[: self._max_detections]
        names = tf.constant(self._class_names)
        return {
            "boxes": boxes,
            "classes": labels,
            "scores": scores,
            "labels": tf.gather(names, labels - 1),
            "num_detections": tf.size(scores),
            "image_size": hw,
            "class_names": names,
        }


# What tf.saved_model.save writes; an earlier export also has assets/export.json.
EXPORT_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "fingerprint.pb"})


def foreign_entries(path: str, entries: frozenset, manifest: str, is_export: Callable[[str], bool]) -> Optional[str]:
    """None if `path` is exactly an earlier export (only `entries`, and `is_export(path)`), else why not (for a
    one-line refusal); `manifest` names what an export has."""
    if not os.path.isdir(path):
        return "it is a file"
    other = sorted(set(os.listdir(path)) - entries)
    if other:
        return f"it holds {', '.join(other[:3])}{', ...' if len(other) > 3 else ''}"
    if not is_export(path):
        return f"it has no {manifest}"
    return None


def foreign_export_entries(path: str) -> Optional[str]:
    """None if `path` is exactly an earlier SavedModel export, else why not."""
    return foreign_entries(path, EXPORT_ENTRIES, "assets/export.json",
                           lambda p: os.path.isfile(os.path.join(p, "assets", "export.json")))


@contextlib.contextmanager
def staged_export(output_dir: str, overwrite: bool, foreign: Callable[[str], Optional[str]]) -> Iterator[str]:
    """A fresh hidden directory beside `output_dir` to build an export in: its `model` entry is renamed to
    `output_dir` when the block ends without an error. An existing non-empty `output_dir` is replaced only with
    `overwrite`, and only when `foreign(output_dir)` (why it is not an earlier export, or None) finds nothing."""
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        if not overwrite:
            raise DetkitError(f"{output_dir}: already exists and is not empty (use --overwrite to replace it)")
        reason = foreign(output_dir)
        if reason is not None:
            raise DetkitError(f"{output_dir}: not replacing it: {reason}, so not an earlier "
                              "`detkit checkpoint export`; choose another --output")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    for prefix in ("export", "export-assets"):  # left by exports that were killed
        atomic.remove_stale_temp(parent, prefix)
    staging = atomic.make_temp_dir(parent, "export")
    try:
        yield staging
        pause_point("export.swap")
        atomic.replace_dir(os.path.join(staging, "model"), output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_exportable(source: str) -> None:
    """A CheckpointError when `source` is itself an exported model (export the run it came from)."""
    manifest = exported_model(source) if os.path.isdir(source) else None
    if manifest is not None:
        raise CheckpointError(f"{source}: already an exported model; export the run it came from "
                              f"({manifest.get('checkpoint', 'see its export.json')})")


def load_for_export(source: str, overrides: tuple[str, ...], min_prob: Optional[float],
                    max_detections: Optional[int]) -> tuple[Detector, float, int]:
    """The run's Detector (refusing an export as the source) and the filters the export records: the given ones,
    else the run's predict.min_prob and predict.max_detections."""
    check_exportable(source)
    detector = Detector.from_checkpoint(source, overrides)
    predict = detector.config.predict
    return (detector, predict.min_prob if min_prob is None else float(min_prob),
            predict.max_detections if max_detections is None else int(max_detections))


def export_manifest(detector: Detector, min_prob: float, max_detections: int, **extra: Any) -> dict:
    """What every export records: the checkpoint it came from, the filters and input sizes, when."""
    cfg, resolved = detector.config, detector.checkpoint
    return {"checkpoint": os.path.abspath(resolved.prefix), "step": resolved.step, "min_prob": min_prob,
            "max_detections": max_detections, "image_min_size": cfg.dataset.image.min_size,
            "image_max_size": cfg.dataset.image.max_size, **extra,
            "created": datetime.datetime.now().isoformat(timespec="seconds")}


def export_saved_model(source: str, output_dir: str, min_prob: Optional[float] = None,
                       max_detections: Optional[int] = None, overwrite: bool = False,
                       overrides: tuple[str, ...] = ()) -> ExportInfo:
    """Write the newest (or the given) checkpoint of a run as a SavedModel in `output_dir`.

    The SavedModel is written to a hidden directory beside `output_dir` and renamed into place.
    """
    with staged_export(output_dir, overwrite, foreign_export_entries) as staging:
        detector, min_prob, max_detections = load_for_export(source, overrides, min_prob, max_detections)
        cfg = detector.config
        module = DetectorModule(detector.model, detector.class_names, min_prob, max_detections)
        manifest = export_manifest(detector, min_prob, max_detections, signature=SIGNATURE, inputs={
            "image_bytes": "tf.string scalar: encoded JPEG/PNG/GIF/BMP"}, outputs={
            "boxes": "float32 [N, 4] xmin, ymin, xmax, ymax in original-image pixels",
            "classes": "int32 [N] 1-based class ids (class_names[classes - 1])",
            "scores": "float32 [N]",
            "labels": "string [N] class names",
            "num_detections": "int32 []",
            "image_size": "int32 [2] height, width of the upright image",
            "class_names": "string [C]",
        })
        files = os.path.join(staging, "files")
        os.makedirs(files)
        for name, text in ((layout.CONFIG_FILE, dump_yaml(cfg)),
                           (layout.CLASSES_FILE, json.dumps(detector.class_names, indent=2) + "\n"),
                           ("export.json", json.dumps(manifest, indent=2) + "\n")):
            with open(os.path.join(files, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        module.config_file = tf.saved_model.Asset(os.path.join(files, "config.yml"))
        module.classes_file = tf.saved_model.Asset(os.path.join(files, "classes.json"))
        module.export_file = tf.saved_model.Asset(os.path.join(files, "export.json"))
        signature = module.serve.get_concrete_function()
        try:
            tf.saved_model.save(module, os.path.join(staging, "model"), signatures={SIGNATURE: signature})
        except (OSError, tf.errors.OpError) as exc:
            raise DetkitError(f"{output_dir}: cannot write the SavedModel ({str(exc).splitlines()[0][:200]})") from None
    return ExportInfo(output_dir=output_dir, checkpoint=detector.checkpoint.prefix, step=detector.checkpoint.step,
                      min_prob=min_prob, max_detections=max_detections)
