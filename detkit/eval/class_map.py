"""Which of a dataset's labels each of a model's labels is, by class name.

A COCO detector has torchvision's 90 label slots (10 of them unused); a COCO set converted by
`detkit dataset transform` has the 80 used names, numbered 1..80 in its own order. Matching by name lets
one evaluate the other, and any model on a dataset of a subset of its classes: detections of classes the
dataset does not have are dropped, as those objects are not labelled there.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from detkit.pretrained.classes import UNUSED_CLASS


def label_map(model_names: Sequence[str], dataset_names: Sequence[str]) -> Optional[np.ndarray]:
    """None when the names are equal; else int array: model label -> dataset label (0: not in the dataset).

    Raises ValueError naming the first dataset class the model does not have.
    """
    if list(model_names) == list(dataset_names):
        return None
    slot = {name: i + 1 for i, name in enumerate(model_names) if name != UNUSED_CLASS}
    missing = [name for name in dataset_names if name not in slot]
    if missing:
        raise ValueError(f"class {missing[0]!r} is not one the model detects")
    mapping = np.zeros(len(model_names) + 1, dtype=np.int64)
    for j, name in enumerate(dataset_names):
        mapping[slot[name]] = j + 1
    return mapping


def apply_label_map(mapping: Optional[np.ndarray], boxes: np.ndarray, labels: np.ndarray,
                    scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections relabelled to the dataset's labels, without those of classes the dataset lacks."""
    if mapping is None:
        return boxes, labels, scores
    new = mapping[np.asarray(labels, dtype=np.int64)]
    keep = new > 0
    return boxes[keep], new[keep], scores[keep]
