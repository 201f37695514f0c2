"""Import TensorFlow without its start-up noise on CPU-only machines."""
from __future__ import annotations

import logging
import os
import sys
from types import ModuleType

# Lazy imports: this module exists to import TensorFlow late and quietly.


def import_tensorflow(verbose: bool = False) -> ModuleType:
    """Import tensorflow once; unless verbose, hide CUDA/oneDNN start-up messages."""
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # Some messages are printed by C++ before absl logging is set up, so only an fd-level
    # redirect of stderr hides them; it is restored right after import and device discovery.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf
