"""What runs a detector's network: TensorFlow on the Keras model, or OpenVINO on an exported model directory.

A runtime turns RGB uint8 images into raw detections (boxes in the image's pixels, scores, 1-based labels; best
first, before any filtering); `Detector` holds one and does the rest (filters, class names, the config).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from detkit.errors import CheckpointError, DetkitError
from detkit.models.faster_rcnn import FasterRCNN, detections_in_order
from detkit.utils import cpu

# Lazy imports: openvino is an optional extra, imported by openvino_module() when an export is loaded or written.

Raw = tuple[np.ndarray, np.ndarray, np.ndarray]

OPENVINO_FORMAT = "openvino"
OPENVINO_MODEL_FILE = "model.xml"
OPENVINO_INPUT = "image"
OPENVINO_OUTPUTS = ("boxes", "scores", "labels")
# float32 everywhere: OpenVINO's default on CPUs with bfloat16 units is bfloat16, which moves scores and boxes.
OPENVINO_PROPERTIES = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


class TensorFlowRuntime:
    """A Keras Faster R-CNN run by TensorFlow, one image or a zero-padded batch per call."""

    def __init__(self, model: FasterRCNN):
        self.model = model
        cpu.note_model_run()  # a later training in this process cannot cap oneDNN any more (utils/cpu.py)

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

    def one(self, image: np.ndarray) -> Raw:
        """Boxes, scores and labels of one image before filtering."""
        boxes, scores, labels = self._infer(tf.convert_to_tensor(image))
        return boxes.numpy(), scores.numpy(), labels.numpy()

    def padded(self, images: list[np.ndarray]) -> list[Raw]:
        """Boxes, scores and labels of several images from one model call on a zero-padded batch."""
        height = max(im.shape[0] for im in images)
        width = max(im.shape[1] for im in images)
        batch = np.zeros((len(images), height, width, 3), np.uint8)
        for i, image in enumerate(images):
            batch[i, :image.shape[0], :image.shape[1]] = image
        out = self._infer_batch(tf.constant(batch), tf.constant([im.shape[:2] for im in images], tf.int32))
        return [tuple(t.numpy() for t in detections_in_order(out, i)) for i in range(len(images))]


def openvino_module() -> Any:
    """The openvino package, or a one-line error saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise DetkitError('OpenVINO is not installed: pip install "detkit[openvino]" (or pip install openvino)') \
            from None
    return openvino


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut at `limit` characters (OpenVINO's span many lines)."""
    return " ".join(str(exc).split())[:limit]


class OpenVINORuntime:
    """An exported model directory run by OpenVINO's CPU plugin (the graph takes one image per call)."""

    model: Optional[FasterRCNN] = None

    def __init__(self, compiled: Any, path: str = ""):
        self.path = path
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._outputs = [compiled.output(name) for name in OPENVINO_OUTPUTS]

    @classmethod
    def compile(cls, model: Any, threads: int = 0, label: str = "the model") -> "OpenVINORuntime":
        """A runtime of an OpenVINO model (an ov.Model or the path of its .xml) compiled for this CPU."""
        ov = openvino_module()
        properties = dict(OPENVINO_PROPERTIES, **({"INFERENCE_NUM_THREADS": threads} if threads else {}))
        try:
            return cls(ov.Core().compile_model(model, "CPU", properties), model if isinstance(model, str) else "")
        except Exception as exc:  # a missing or damaged model.xml / model.bin: OpenVINO's RuntimeError
            raise CheckpointError(f"{label}: OpenVINO cannot load it ({one_line(exc)})") from None

    @classmethod
    def load(cls, directory: str, threads: int = 0) -> "OpenVINORuntime":
        """The runtime of an exported model directory."""
        path = os.path.join(directory, OPENVINO_MODEL_FILE)
        return cls.compile(path, threads, label=path)

    def one(self, image: np.ndarray) -> Raw:
        """Boxes, scores and labels of one image before filtering."""
        result = self._request.infer({OPENVINO_INPUT: np.ascontiguousarray(image, np.uint8)})
        return tuple(np.asarray(result[port]) for port in self._outputs)

    def padded(self, images: list[np.ndarray]) -> list[Raw]:
        """One image at a time: the exported graph takes one."""
        return [self.one(image) for image in images]
