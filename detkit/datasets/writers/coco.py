"""COCO instances JSON: annotations/instances_<split>.json and the images in <split>/."""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

from detkit.datasets.example import Example
from detkit.datasets.writers.common import Files, exact_values, flags_lost, normalised


class CocoWriter:
    """Writes one instances JSON per split; category ids are the labels (1-based, in classes.json order)."""

    def __init__(self, root: str, classes: list[str]):
        """Write under `root` with the class map `classes`."""
        self.files = Files(root)
        self.category = {name: i + 1 for i, name in enumerate(classes)}
        self.categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)]
        self.splits: dict[str, list[Example]] = {}
        self.counts: Counter = Counter()

    def add(self, split: str, example: Example) -> None:
        """One image (written now) and its boxes (written with the split's JSON)."""
        self.files.write(os.path.join(split, example.filename), example.image_bytes or b"", example.source)
        self.splits.setdefault(split, []).append(dataclasses.replace(example, image_bytes=None))  # bytes written
        self.counts[f"{split} difficult flags dropped"] += flags_lost(example, difficult=False, crowd=True)

    def close(self) -> dict:
        """Write each split's JSON; what was dropped."""
        for split, examples in self.splits.items():
            data = instances(examples, self.category, self.categories)
            self.files.write(os.path.join("annotations", f"instances_{split}.json"),
                             json.dumps(data, indent=1).encode(), f"split {split}")
        return {k: v for k, v in self.counts.items() if v}


def instances(examples: list[Example], category: dict[str, int], categories: list[dict]) -> dict:
    """The instances JSON of one split; image ids are the examples' COCO ids when they have them, else 1, 2, ..."""
    ids = [e.source_id for e in examples]
    keep_ids = all(i.isdigit() for i in ids) and len(set(ids)) == len(ids)
    images, annotations = [], []
    for n, example in enumerate(examples, start=1):
        image_id = int(example.source_id) if keep_ids else n
        w, h = example.width, example.height
        images.append({"id": image_id, "file_name": example.filename, "width": w, "height": h})
        for box, target, name, crowd in zip(example.boxes, normalised(example), example.classes, example.is_crowd):
            x, y = exact_values(box[:2], lambda v: (v[0] / w, v[1] / h), target[:2])
            bw, bh = exact_values((box[2] - x, box[3] - y), lambda v: ((x + v[0]) / w, (y + v[1]) / h), target[2:])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[name],
                                "bbox": [_num(x), _num(y), _num(bw), _num(bh)], "area": _num(bw * bh),
                                "iscrowd": int(crowd), "segmentation": []})
    return {"images": images, "annotations": annotations, "categories": categories}


def _num(value: float) -> float | int:
    """An integer-valued coordinate as an int in the JSON."""
    return int(value) if value == int(value) else value
