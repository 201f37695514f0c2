"""Class names of imported checkpoints: torchvision's COCO slots, or the user's own list."""
from __future__ import annotations

import json
import os
from typing import Optional

from detkit.errors import CheckpointError

# torchvision's 91 COCO label slots without "__background__": slot i is COCO category id i, and the ids COCO
# never used (12, 26, 29, 30, 45, 66, 68, 69, 71, 83) are "N/A". Those slots are never trained as objects,
# and detections of them are never reported (see UNUSED_CLASS).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# The name of a label slot that holds no class: predict, eval, server and export drop its detections.
UNUSED_CLASS = "N/A"


def read_class_file(path: str) -> list[str]:
    """Class names from a classes.json list or a text file with one name per line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read class names ({exc.strerror or exc})") from None
    if path.endswith(".json"):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{path}: not JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{path}: expected a JSON list of class names")
        return [n.strip() for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def resolve_class_names(spec: Optional[str], count: int, source: str) -> list[str]:
    """The `count` class names `spec` gives: "coco", "a,b,...", a file, or None (COCO when count is 90)."""
    if spec is None:
        if count != len(COCO_CLASSES):
            raise CheckpointError(f"{source}: the checkpoint has {count} classes (not COCO's {len(COCO_CLASSES)}); "
                                  "name them with --classes a,b,... or --classes FILE (one name per line)")
        spec = "coco"
    if spec == "coco":
        names = list(COCO_CLASSES)
    elif os.path.isfile(spec):
        names = read_class_file(spec)
    elif "," in spec or count == 1:
        names = [n.strip() for n in spec.split(",")]
    else:
        raise CheckpointError(f"--classes {spec}: no such file, and not coco or a comma-separated list of names")
    if len(names) != count:
        raise CheckpointError(f"--classes {spec}: {len(names)} names for a checkpoint with {count} classes")
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise CheckpointError(f"--classes {spec}: class {empty[0]} has an empty name")
    real = [n for n in names if n != UNUSED_CLASS]
    duplicates = sorted({n for n in real if real.count(n) > 1})
    if duplicates:
        raise CheckpointError(f"--classes {spec}: duplicate class name {duplicates[0]!r}")
    return names
