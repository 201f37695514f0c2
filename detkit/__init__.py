"""detkit: Faster R-CNN object detection with TensorFlow 2 and Keras 3."""
from detkit.utils.cpu import apply_onednn_workaround as _apply_onednn_workaround

__version__ = "0.1.0"

# Before any TensorFlow kernel runs, wherever detkit is imported from (CLI, tests, Python API).
ONEDNN_ISA_CAP = _apply_onednn_workaround()
