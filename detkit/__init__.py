"""detkit: Faster R-CNN object detection with TensorFlow 2 and Keras 3.

    from detkit import Detector
    detections = Detector.from_checkpoint("jobs/my-run").predict(image)
"""
from typing import Any

from detkit.version import __version__

# Lazy imports: `import detkit` (which the CLI does) must not import TensorFlow; Detector loads on first use.

__all__ = ["Detector", "Detection", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import detkit` (the CLI does) must not import TensorFlow.
    if name in ("Detector", "Detection"):
        from detkit import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")
