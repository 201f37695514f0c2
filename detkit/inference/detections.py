"""Detections as the user sees them, and the one filter over them: min prob, only/ignore classes, at most N.

Label slots named UNUSED_CLASS (the COCO ids torchvision's weights leave empty) are never reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from detkit.errors import ConfigError
from detkit.pretrained.classes import UNUSED_CLASS


@dataclass
class Detection:
    """One detected object in original-image pixels."""

    bbox: list[float]  # xmin, ymin, xmax, ymax
    label: str
    label_id: int
    prob: float

    def to_json(self) -> dict:
        """Luminoth's object format: bbox, label, prob."""
        return {"bbox": [round(v, 2) for v in self.bbox], "label": self.label, "prob": round(self.prob, 4)}


def used_classes(class_names: Sequence[str]) -> list[bool]:
    """Whether each label slot is a real class (COCO's unused ids in torchvision's weights are not)."""
    return [name != UNUSED_CLASS for name in class_names]


def filter_detections(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      min_prob: float, max_detections: int, only_classes: Optional[Iterable[str]] = None,
                      ignore_classes: Optional[Iterable[str]] = None) -> list[Detection]:
    """Detections (best first, as the model returns them) kept by score, class and count."""
    only = set(only_classes) if only_classes else None
    ignore = set(ignore_classes or ())
    used = used_classes(class_names)
    out: list[Detection] = []
    for box, score, label in zip(boxes, scores, labels):
        name = class_names[int(label) - 1]
        if score < min_prob or not used[int(label) - 1] or name in ignore or (only is not None and name not in only):
            continue
        out.append(Detection([float(v) for v in box], name, int(label), float(score)))
        if len(out) >= max_detections:
            break
    return out


def check_class_names(option: str, names: Optional[Iterable[str]], class_names: Sequence[str]) -> None:
    """ConfigError naming `option` when it lists a class the model does not have."""
    unknown = [n for n in names or () if n not in class_names]
    if unknown:
        raise ConfigError(f"{option}: unknown class {', '.join(unknown)} (classes: {', '.join(class_names)})")
