"""Using a trained detector: `Detector`, prediction over files and videos, SavedModel and OpenVINO export.

    decode.py       image bytes -> upright pixels in the TensorFlow graph (the SavedModel's input)
    detections.py   Detection and the one filter (min prob, only/ignore classes, unused label slots, max)
    detector.py     Detector: a checkpoint (run, ckpt-N prefix, packed .tar or OpenVINO export) -> detections
    runtimes.py     what runs the network for a Detector: TensorFlow on the Keras model, or OpenVINO on an export
    predict.py      batched, read-ahead prediction over images and videos (`detkit predict`)
    export.py       a SavedModel taking image bytes (`detkit checkpoint export`), the staging both formats share
    openvino.py     an OpenVINO model of a run (`checkpoint export --format openvino`)

The input transform (resize, normalise, boxes back to the image's pixels) belongs to the model:
detkit/models/transform.py. `Detector`, `Detection` and `export_saved_model` are imported on first use, so that
`import detkit` (which offers `detkit.Detector`) does not import TensorFlow.
"""
from __future__ import annotations

from typing import Any

# Lazy imports: the names below load their modules (and TensorFlow) on first use, so `import detkit` stays light.

_LAZY = {
    "Detector": "detkit.inference.detector",
    "Detection": "detkit.inference.detections",
    "export_saved_model": "detkit.inference.export",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detkit.inference' has no attribute {name!r}")
