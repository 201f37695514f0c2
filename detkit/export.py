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

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from detkit.config import dump_yaml
from detkit.datasets.pipeline import input_hw
from detkit.errors import DetkitError
from detkit.pretrained.classes import UNUSED_CLASS
from detkit.utils import atomic

SIGNATURE = "serving_default"
# Bounds of the in-graph EXIF scan: JPEG segments before the image data, and IFD0 entries.
_MAX_SEGMENTS = 64
_MAX_IFD_ENTRIES = 256


@dataclass
class ExportInfo:
    """What `export_saved_model` wrote."""

    output_dir: str
    checkpoint: str
    step: int
    min_prob: float
    max_detections: int


def _u16(data: tf.Tensor, pos: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    """Unsigned 16-bit int at `pos` of a uint8 vector padded with two trailing zeros (0 outside the data)."""
    n = tf.size(data) - 2
    a = tf.cast(tf.gather(data, tf.clip_by_value(pos, 0, n + 1)), tf.int32)
    b = tf.cast(tf.gather(data, tf.clip_by_value(pos + 1, 0, n + 1)), tf.int32)
    value = tf.where(little, a + 256 * b, 256 * a + b)
    return tf.where((pos >= 0) & (pos + 1 < n), value, 0)


def _u32(data: tf.Tensor, pos: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    lo = _u16(data, pos, little)
    hi = _u16(data, pos + 2, little)
    return tf.where(little, lo + 65536 * hi, 65536 * lo + hi)


def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation tag (1-8) of a JPEG's APP1 segment; 1 when absent or not a JPEG."""
    raw = tf.io.decode_raw(image_bytes, tf.uint8)
    n = tf.size(raw)
    data = tf.concat([raw, tf.zeros([2], tf.uint8)], 0)
    big = tf.constant(False)
    is_jpeg = (n > 4) & (_u16(data, tf.constant(0), big) == 0xFFD8)

    # Walk the JPEG segments (FF xx LLLL ...) up to start-of-scan, looking for "Exif\0\0" in APP1.
    def seg_cond(i, pos, tiff):
        return (i < _MAX_SEGMENTS) & (tiff < 0) & (pos + 4 <= n)

    def seg_body(i, pos, tiff):
        marker = _u16(data, pos, big)
        length = _u16(data, pos + 2, big)
        valid = (marker >= 0xFF01) & (marker != 0xFFDA) & (marker != 0xFFD9) & (length >= 2)
        header = tf.strings.substr(image_bytes, tf.minimum(pos + 4, n), 6)
        found = valid & (marker == 0xFFE1) & tf.equal(header, b"Exif\x00\x00")
        tiff = tf.where(found, pos + 10, tiff)
        next_pos = tf.where(valid, pos + 2 + length, n)  # anything unexpected ends the walk
        return i + 1, next_pos, tiff

    _, _, tiff = tf.while_loop(seg_cond, seg_body, (tf.constant(0), tf.constant(2), tf.constant(-1)))
    tiff = tf.where(is_jpeg, tiff, -1)
    order = _u16(data, tiff, big)
    little = tf.equal(order, 0x4949)  # "II"
    valid_tiff = (tiff >= 0) & (little | tf.equal(order, 0x4D4D))
    ifd = tiff + _u32(data, tiff + 4, little)
    count = tf.minimum(_u16(data, ifd, little), _MAX_IFD_ENTRIES)

    def ifd_cond(i, value):
        return (i < count) & (value == 0)

    def ifd_body(i, value):
        entry = ifd + 2 + 12 * i
        is_orientation = tf.equal(_u16(data, entry, little), 0x0112)
        return i + 1, tf.where(is_orientation, _u16(data, entry + 8, little), value)

    _, value = tf.while_loop(ifd_cond, ifd_body, (tf.constant(0), tf.constant(0)))
    value = tf.where(valid_tiff & (ifd + 2 <= n), value, 1)
    return tf.where((value >= 1) & (value <= 8), value, 1)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turn stored pixels [H, W, C] upright, as PIL.ImageOps.exif_transpose does."""
    branches = [
        lambda: image,                                            # 1 (and 0: unused)
        lambda: image,                                            # 1
        lambda: tf.reverse(image, [1]),                           # 2 mirror horizontal
        lambda: tf.reverse(image, [0, 1]),                        # 3 rotate 180
        lambda: tf.reverse(image, [0]),                           # 4 mirror vertical
        lambda: tf.transpose(image, [1, 0, 2]),                   # 5 transpose
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [1]),  # 6 rotate 90 clockwise
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # 7 transverse
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0]),  # 8 rotate 90 counter-clockwise
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32), branches)


class DetectorModule(tf.Module):
    """The model plus decoding, resizing and filtering, as one serving function."""

    def __init__(self, model, class_names: list[str], min_size: int, max_size: int, min_prob: float,
                 max_detections: int, size_rounding: str = "round"):
        super().__init__(name="detkit_detector")
        self.model = model
        self._class_names = list(class_names)
        # Label slots named UNUSED_CLASS (COCO's unused ids in torchvision's weights) are never reported.
        self._used = tf.constant([name != UNUSED_CLASS for name in class_names])
        self._min_size = int(min_size)
        self._max_size = int(max_size)
        self._size_rounding = size_rounding
        self._min_prob = float(min_prob)
        self._max_detections = int(max_detections)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        # INTEGER_ACCURATE is libjpeg's default and Pillow's: the pixels equal those `detkit predict` reads.
        image = tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
        )
        image = apply_orientation(image, exif_orientation(image_bytes))
        image.set_shape([None, None, 3])
        hw = tf.shape(image)[:2]
        # As detkit.detector.Detector: same scale, same rounding, same bilinear resize.
        new_hw = input_hw(hw, self._min_size, self._max_size, self._size_rounding)
        resized = tf.image.resize(tf.cast(image, tf.float32), new_hw)
        out = self.model((resized[None], new_hw[None]), training=False)
        n = out["num_detections"][0]
        ratio = tf.cast(hw, tf.float32) / tf.cast(new_hw, tf.float32)
        boxes = out["boxes"][0, :n] * tf.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
        scores = out["scores"][0, :n]
        labels = tf.cast(out["labels"][0, :n], tf.int32)
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


def export_saved_model(source: str, output_dir: str, min_prob: Optional[float] = None,
                       max_detections: Optional[int] = None, overwrite: bool = False,
                       overrides: tuple[str, ...] = ()) -> ExportInfo:
    """Write the newest (or the given) checkpoint of a run as a SavedModel in `output_dir`.

    The SavedModel is written to a hidden directory beside `output_dir` and renamed into place.
    """
    from detkit.detector import Detector

    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)) and not overwrite:
        raise DetkitError(f"{output_dir}: already exists and is not empty (use --overwrite to replace it)")
    detector = Detector.from_checkpoint(source, overrides)
    cfg = detector.config
    min_prob = cfg.predict.min_prob if min_prob is None else float(min_prob)
    max_detections = cfg.predict.max_detections if max_detections is None else int(max_detections)
    module = DetectorModule(detector.model, detector.class_names, cfg.dataset.image.min_size,
                            cfg.dataset.image.max_size, min_prob, max_detections, cfg.dataset.image.size_rounding)
    resolved = detector.checkpoint
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    for prefix in ("export", "export-assets"):  # left by exports that were killed
        atomic.remove_stale_temp(parent, prefix)
    staging = atomic.make_temp_dir(parent, "export")
    files = atomic.make_temp_dir(parent, "export-assets")
    try:
        manifest = {
            "checkpoint": os.path.abspath(resolved.prefix),
            "step": resolved.step,
            "min_prob": min_prob,
            "max_detections": max_detections,
            "image_min_size": cfg.dataset.image.min_size,
            "image_max_size": cfg.dataset.image.max_size,
            "signature": SIGNATURE,
            "inputs": {"image_bytes": "tf.string scalar: encoded JPEG/PNG/GIF/BMP"},
            "outputs": {
                "boxes": "float32 [N, 4] xmin, ymin, xmax, ymax in original-image pixels",
                "classes": "int32 [N] 1-based class ids (class_names[classes - 1])",
                "scores": "float32 [N]",
                "labels": "string [N] class names",
                "num_detections": "int32 []",
                "image_size": "int32 [2] height, width of the upright image",
                "class_names": "string [C]",
            },
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        for name, text in (("config.yml", dump_yaml(cfg)),
                           ("classes.json", json.dumps(detector.class_names, indent=2) + "\n"),
                           ("export.json", json.dumps(manifest, indent=2) + "\n")):
            with open(os.path.join(files, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        module.config_file = tf.saved_model.Asset(os.path.join(files, "config.yml"))
        module.classes_file = tf.saved_model.Asset(os.path.join(files, "classes.json"))
        module.export_file = tf.saved_model.Asset(os.path.join(files, "export.json"))
        signature = module.serve.get_concrete_function()
        export_dir = os.path.join(staging, "model")
        try:
            tf.saved_model.save(module, export_dir, signatures={SIGNATURE: signature})
        except (OSError, tf.errors.OpError) as exc:
            raise DetkitError(f"{output_dir}: cannot write the SavedModel ({str(exc).splitlines()[0][:200]})") from None
        atomic.replace_dir(export_dir, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)
    return ExportInfo(output_dir=output_dir, checkpoint=resolved.prefix, step=resolved.step, min_prob=min_prob,
                      max_detections=max_detections)
