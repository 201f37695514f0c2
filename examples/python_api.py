"""Use a trained detector from Python, without the CLI.

    python examples/python_api.py RUN_DIR image.jpg
"""
import sys

import numpy as np
from PIL import Image

from detkit.utils.tf_quiet import import_tensorflow

import_tensorflow()  # quiet TensorFlow start-up; optional

from detkit import Detector  # noqa: E402

detector = Detector.from_checkpoint(sys.argv[1])  # a run dir, a ckpt-N prefix or a packed .tar
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
for det in detector.predict(image, min_prob=0.5):
    print(det.label, round(det.prob, 3), [round(v) for v in det.bbox])  # bbox in original pixels
