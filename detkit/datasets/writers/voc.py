"""Pascal VOC XML in the VOCdevkit layout: Annotations/<name>.xml, JPEGImages/<name>, ImageSets/Main/<split>.txt."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter

from detkit.datasets.example import Example
from detkit.datasets.writers.common import Files, exact_values, flags_lost, normalised, number_text


class VocWriter:
    """Writes a VOCdevkit; an image in two splits is written once and listed in both split files."""

    def __init__(self, root: str, classes: list[str]):
        """Write under `root`; `classes` is the class map (unused: VOC names each box's class)."""
        self.files = Files(root)
        self.ids: dict[str, list[str]] = {}
        self.counts: Counter = Counter()

    def add(self, split: str, example: Example) -> None:
        """One image and its annotation file."""
        stem = os.path.splitext(example.filename)[0]
        self.files.write(os.path.join("JPEGImages", example.filename), example.image_bytes or b"", example.source)
        self.files.write(os.path.join("Annotations", stem + ".xml"), annotation_xml(example), example.source)
        self.ids.setdefault(split, []).append(stem)
        self.counts[f"{split} crowd flags dropped"] += flags_lost(example, difficult=True, crowd=False)

    def close(self) -> dict:
        """Write the split files; what was dropped."""
        for split, ids in self.ids.items():
            self.files.write(os.path.join("ImageSets", "Main", f"{split}.txt"), "".join(i + "\n" for i in ids).encode(),
                             f"split {split}")
        return {k: v for k, v in self.counts.items() if v}


def annotation_xml(example: Example) -> bytes:
    """The VOC XML of one image."""
    w, h = example.width, example.height
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = example.filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box, target, name, difficult in zip(example.boxes, normalised(example), example.classes, example.difficult):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        values = exact_values(box, lambda v: (v[0] / w, v[1] / h, v[2] / w, v[3] / h), target)
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), values):
            ET.SubElement(bndbox, key).text = number_text(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
