"""The Ultralytics YOLO layout: data.yaml, images/<split>/ and labels/<split>/ with `class cx cy w h` lines."""
from __future__ import annotations

import io
import os
from collections import Counter

import yaml

from detkit.datasets.example import Example
from detkit.datasets.orientation import box_to_stored, box_to_upright, read_orientation, upright_size
from detkit.datasets.readers.yolo import yolo_to_pixels
from detkit.datasets.writers.common import Files, exact_values, flags_lost, normalised, number_text


class YoloWriter:
    """Writes data.yaml (no `path`: Ultralytics then reads the folders next to the yaml) and the two folders."""

    def __init__(self, root: str, classes: list[str]):
        """Write under `root`; class index i is classes.json's name i."""
        self.files = Files(root)
        self.classes = list(classes)
        self.index = {name: i for i, name in enumerate(classes)}
        self.splits: list[str] = []
        self.counts: Counter = Counter()

    def add(self, split: str, example: Example) -> None:
        """One image and its label file (empty for a negative)."""
        if split not in self.splits:
            self.splits.append(split)
        self.files.write(os.path.join("images", split, example.filename), example.image_bytes or b"", example.source)
        stem = os.path.splitext(example.filename)[0]
        self.files.write(os.path.join("labels", split, stem + ".txt"), label_text(example, self.index).encode(),
                         example.source)
        self.counts[f"{split} difficult and crowd flags dropped"] += flags_lost(example, difficult=False, crowd=False)

    def close(self) -> dict:
        """Write data.yaml; what was dropped."""
        data = {**{split: f"images/{split}" for split in self.splits}, "nc": len(self.classes),
                "names": dict(enumerate(self.classes))}
        self.files.write("data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode(), "data.yaml")
        return {k: v for k, v in self.counts.items() if v}


def label_text(example: Example, index: dict[str, int]) -> str:
    """The label file of one image: boxes as fractions of the upright photo, as Ultralytics reads them."""
    width, height, orientation = read_orientation(io.BytesIO(example.image_bytes or b""))
    up_w, up_h = upright_size(width, height, orientation)
    lines = []
    for box, target, name in zip(example.boxes, normalised(example), example.classes):
        x0, y0, x1, y1 = box if orientation == 1 else box_to_upright(box, orientation, width, height)
        values = ((x0 + x1) / 2 / up_w, (y0 + y1) / 2 / up_h, (x1 - x0) / up_w, (y1 - y0) / up_h)

        def read(v: list[float]) -> tuple[float, ...]:
            """The YOLO reader's arithmetic, then the record's normalisation."""
            b = yolo_to_pixels(v[0], v[1], v[2], v[3], up_w, up_h)
            b = b if orientation == 1 else box_to_stored(b, orientation, width, height)
            return b[0] / width, b[1] / height, b[2] / width, b[3] / height

        lines.append(" ".join([str(index[name])] + [number_text(v) for v in exact_values(values, read, target)]))
    return "".join(line + "\n" for line in lines)
