"""The photos with the most errors at the report's score threshold, their error lists, and their drawings."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from detkit.datasets import pipeline
from detkit.errors import DatasetError
from detkit.eval.confusion import ImageCounts
from detkit.eval.error_types import ERROR_TYPES, ImageErrors
from detkit.eval.matching import IGNORED, TRUE_POSITIVE, ImageMatch
from detkit.utils.draw import PALETTE, add_legend, draw_detections

# Three palette colours far apart in hue: green, red, blue.
KIND_COLORS = {"true positive": PALETTE[1], "false positive": PALETTE[0], "missed": PALETTE[3]}


@dataclass
class WorstImage:
    """One photo: its position in the split, id, counts and the boxes to draw (all in original pixels)."""
    index: int
    image_id: str
    true_positives: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[tuple[str, list[float], str]] = field(default_factory=list)  # (kind, box, label text)


def _box(values: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in values]


def describe_image(index: int, match: ImageMatch, counts: ImageCounts, errors: ImageErrors,
                   class_names: Sequence[str]) -> WorstImage:
    """The errors of one image at the threshold: false positives (with their TIDE type) and missed gts."""
    image = WorstImage(index, match.image_id, 0)
    for k in range(counts.kept):
        if match.outcome[k] == IGNORED:
            continue
        name = class_names[match.det_labels[k] - 1]
        score = float(match.det_scores[k])
        if match.outcome[k] == TRUE_POSITIVE:
            image.true_positives += 1
            image.boxes.append(("true positive", _box(match.det_boxes[k]), f"{name} {score:.2f}"))
            continue
        kind = ERROR_TYPES[errors.det_type[k]]
        j = counts.det_gt[k]
        iou = float(match.ious[k].max()) if match.ious.shape[1] else 0.0
        entry = {"kind": "false positive", "class": name, "score": round(score, 4), "type": kind,
                 "iou": round(iou, 3), "box": _box(match.det_boxes[k])}
        if j >= 0:
            entry["gt_class"] = class_names[match.gt_labels[j] - 1]
        image.errors.append(entry)
        image.boxes.append(("false positive", _box(match.det_boxes[k]), f"FP {name} {score:.2f}"))
    for j in np.flatnonzero((~match.gt_ignore & (counts.gt_det < 0)) | _wrongly_found(match, counts)):
        name = class_names[match.gt_labels[j] - 1]
        entry = {"kind": "missed", "class": name, "box": _box(match.gt_boxes[j])}
        k = counts.gt_det[j]
        if k >= 0:
            entry["detected_as"] = class_names[match.det_labels[k] - 1]
        image.errors.append(entry)
        image.boxes.append(("missed", _box(match.gt_boxes[j]), f"missed {name}"))
    return image


def _wrongly_found(match: ImageMatch, counts: ImageCounts) -> np.ndarray:
    """[G] bool: the gt is counted against a detection of another class."""
    wrong = np.zeros(len(counts.gt_det), dtype=bool)
    found = counts.gt_det >= 0
    wrong[found] = match.det_labels[counts.gt_det[found]] != match.gt_labels[found]
    return wrong


def worst_images(matches: Sequence[ImageMatch], counts: Sequence[ImageCounts], errors: Sequence[ImageErrors],
                 class_names: Sequence[str], n: int) -> list[WorstImage]:
    """The `n` images with the most errors (false positives + missed gts), most first; none without errors."""
    described = [describe_image(i, m, c, e, class_names) for i, (m, c, e) in enumerate(zip(matches, counts, errors))]
    ranked = sorted((d for d in described if d.errors), key=lambda d: (-len(d.errors), d.index))
    return ranked[:n]


def read_images(dataset_dir: str, split: str, indices: Iterable[int], num_parallel_calls: int,
                expected_names: dict[int, str]) -> dict[int, bytes]:
    """The encoded photos at `indices` of a split, read in the order `detkit eval` reads it."""
    wanted = set(indices)
    found: dict[int, bytes] = {}
    if not wanted:
        return found
    for i, record in enumerate(pipeline.raw_records(dataset_dir, split, num_parallel_calls)):
        if i in wanted:
            name = record["filename"].numpy().decode("utf-8", "replace")
            if expected_names.get(i, name) != name:
                raise DatasetError(f"{dataset_dir}: record {i} of split {split!r} is {name!r}, not "
                                 f"{expected_names[i]!r}: the split changed during the evaluation")
            found[i] = record["image"].numpy()
            if len(found) == len(wanted):
                break
    return found


def draw_image(encoded: bytes, image: WorstImage, max_side: int = 800) -> Any:
    """The photo with true positives, false positives and missed gts in three colours and a legend strip."""
    photo = Image.open(io.BytesIO(encoded)).convert("RGB")
    scale = min(1.0, max_side / max(photo.size))
    if scale < 1.0:
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))))
    kinds = list(KIND_COLORS)
    # Missed boxes first, true positives last: the found objects stay readable on top.
    order = sorted(range(len(image.boxes)), key=lambda i: -kinds.index(image.boxes[i][0]))
    boxes = np.array([image.boxes[i][1] for i in order], dtype=np.float64).reshape(-1, 4) * scale
    labels = [image.boxes[i][2] for i in order]
    keys = [PALETTE.index(KIND_COLORS[image.boxes[i][0]]) + 1 for i in order]
    drawn = draw_detections(photo, boxes, labels, None, keys)
    return add_legend(drawn, [(kind, color) for kind, color in KIND_COLORS.items()])
