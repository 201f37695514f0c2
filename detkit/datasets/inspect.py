"""`detkit dataset inspect`: counts per class, image and box size statistics, and drawn samples."""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from detkit.datasets.classes import read_classes
from detkit.datasets.statistics import SplitStatistics
from detkit.datasets.tfrecord import iter_records
from detkit.utils.atomic import write_bytes
from detkit.utils.draw import draw_detections

SMALL_BOX = 16  # pixels; boxes narrower or shorter than this are hard for stride-16 features


def describe(values: Sequence[float]) -> dict[str, float]:
    """min, mean, median and max, rounded; zeros for no values."""
    if len(values) == 0:
        return {"min": 0.0, "mean": 0.0, "median": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {k: round(float(f(arr)), 3) for k, f in
            (("min", np.min), ("mean", np.mean), ("median", np.median), ("max", np.max))}


def summarize(st: SplitStatistics, directory: str, split: str) -> dict[str, Any]:
    """The report's mapping: counts per class and min/mean/median/max of the image and box sizes."""
    boxes, images = st.class_box_counts(), st.class_image_counts()
    difficult = np.bincount(st.box_label[st.box_difficult] - 1, minlength=len(st.classes))
    crowd = np.bincount(st.box_label[st.box_crowd] - 1, minlength=len(st.classes))
    w, h = st.box_width, st.box_height
    area = w * h / np.maximum(st.image_width * st.image_height, 1.0)[st.box_image] if st.num_boxes else w
    sizes = {
        "boxes_per_image": st.boxes_per_image, "image_width": st.image_width, "image_height": st.image_height,
        "box_width": w, "box_height": h,
        # height / width; 0 for a box of no width.
        "box_aspect_ratio": np.where(w > 0, h / np.where(w > 0, w, 1.0), 0.0),
        "box_area_fraction": area,
    }
    stats: dict[str, Any] = {
        "directory": directory,
        "split": split,
        "images": st.num_images,
        "negatives": int((st.boxes_per_image == 0).sum()),
        "boxes": st.num_boxes,
        "formats": dict(st.formats),
        "classes": {c: {"label": i + 1, "boxes": int(boxes[i]), "images": int(images[i]),
                        "difficult": int(difficult[i]), "crowd": int(crowd[i])}
                    for i, c in enumerate(st.classes)},
        "invalid_labels": st.invalid_labels,
    }
    stats.update({key: describe(values) for key, values in sizes.items()})
    stats[f"boxes_smaller_than_{SMALL_BOX}px"] = int(((w < SMALL_BOX) | (h < SMALL_BOX)).sum())
    return stats


def format_report(stats: dict[str, Any]) -> str:
    """The statistics as an aligned text report."""
    lines = [
        f"{stats['directory']} split {stats['split']}: {stats['images']} images "
        f"({stats['negatives']} without boxes), {stats['boxes']} boxes, formats "
        + ", ".join(f"{k} {v}" for k, v in sorted(stats["formats"].items())),
        "",
        f"{'label':>5}  {'class':<24} {'boxes':>7} {'images':>7} {'difficult':>9} {'crowd':>6}",
    ]
    for name, c in stats["classes"].items():
        lines.append(f"{c['label']:>5}  {name:<24} {c['boxes']:>7} {c['images']:>7} "
                     f"{c['difficult']:>9} {c['crowd']:>6}")
    if stats["invalid_labels"]:
        lines.append(f"WARNING: {stats['invalid_labels']} boxes have labels outside classes.json")
    lines += ["", f"{'':<22} {'min':>9} {'mean':>9} {'median':>9} {'max':>9}"]
    for key, title in (("boxes_per_image", "boxes per image"), ("image_width", "image width (px)"),
                       ("image_height", "image height (px)"), ("box_width", "box width (px)"),
                       ("box_height", "box height (px)"), ("box_aspect_ratio", "box height/width"),
                       ("box_area_fraction", "box area / image")):
        d = stats[key]
        lines.append(f"{title:<22} {d['min']:>9g} {d['mean']:>9g} {d['median']:>9g} {d['max']:>9g}")
    small = f"boxes_smaller_than_{SMALL_BOX}px"
    lines.append(f"boxes under {SMALL_BOX} px wide or high: {stats[small]}")
    return "\n".join(lines)


def draw_split(directory: str, split: str, count: int, draw_dir: str) -> list[str]:
    """Write the first `count` images of a split with their boxes drawn; the written paths."""
    classes = read_classes(directory)
    written: list[str] = []
    if count <= 0:
        return written
    os.makedirs(draw_dir, exist_ok=True)
    for i, rec in enumerate(iter_records(directory, split, with_images=True)):
        if i >= count:
            break
        w, h = int(rec["width"]), int(rec["height"])
        boxes = [(x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in rec["boxes"]]
        texts = [_box_text(classes, int(label), bool(diff)) for label, diff in zip(rec["labels"], rec["difficult"])]
        with Image.open(io.BytesIO(rec["image"])) as im:
            drawn = draw_detections(im, boxes, texts, color_key=[int(v) for v in rec["labels"]])
        buf = io.BytesIO()
        drawn.save(buf, format="JPEG", quality=90)
        stem = os.path.splitext(os.path.basename(rec["filename"].decode()))[0] or "image"
        path = os.path.join(draw_dir, f"{split}-{i:04d}-{stem}.jpg")
        write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def _box_text(classes: Sequence[str], label: int, difficult: bool) -> str:
    """The class name shown on a box."""
    name = classes[label - 1] if 1 <= label <= len(classes) else f"label {label}"
    return f"{name} (difficult)" if difficult else name
