"""Using a trained detector: the input transform, `Detector`, prediction over files and videos, SavedModel export.

    transform.py    decode (EXIF), resize for the network, boxes back to original pixels (shared with training)
    detections.py   Detection and the one filter (min prob, only/ignore classes, max)
    detector.py     Detector: a checkpoint (run, ckpt-N prefix or packed .tar) -> detections
    predict.py      batched, read-ahead prediction over images and videos (`detkit predict`)
    export.py       a SavedModel taking image bytes (`detkit checkpoint export`)

`Detector`, `Detection` and `export_saved_model` are imported on first use, so that importing this package
(as the training pipeline does for `transform`) does not build the model code.
"""
from __future__ import annotations

from typing import Any

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
