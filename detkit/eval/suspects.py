"""`detkit dataset suspects`: the likeliest label mistakes of a split, found by a model trained on it.

As cleanlab's object-detection scores and mmdetection's analyze_results do, the model's detections are set
against the ground truth, image by image (IoU >= 0.5 matches a box):
  missing_box    a confident detection (score >= 0.5) that no ground-truth box matches: an object left
                 unlabelled; score = detection score x (1 - its best IoU with any ground truth);
  swapped_label  a ground-truth box the model confidently (>= 0.5) gives another class, more than its own:
                 score = that class's score x (1 - the score of the labelled class);
  wrong_box      a ground-truth box the model gives almost no score (below 0.5): a box around nothing, or in
                 the wrong place; score = (1 - its class's score) x (0.5 + 0.5 x the score of a same-class
                 detection overlapping it partly, when the model puts the object nearby). The 0.5 is the prior
                 that a missed box is the model's fault rather than the label's.
Suspects rank by score, across kinds. The scoring functions are pure; `find_suspects` runs the model through
detkit.eval.runner.collect, and `draw_suspects` draws the top ones.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from detkit.datasets.classes import read_classes
from detkit.datasets.tfrecord import iter_records
from detkit.errors import DatasetError
from detkit.eval.class_map import label_map
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.runner import collect
from detkit.eval.voc_map import iou_matrix
from detkit.inference.detector import Detector
from detkit.utils.atomic import write_bytes
from detkit.utils.draw import draw_detections

MATCH_IOU = 0.5
CONFIDENT = 0.5  # a detection scoring this much is the model's word (predict.min_prob's default)
NEARBY_IOU = 0.1  # a same-class detection overlapping at least this much (but under MATCH_IOU) is "nearby"


@dataclass(frozen=True)
class Suspect:
    """One likely label mistake; boxes in original-image pixels, labels 1-based (0: none)."""

    kind: str
    score: float
    image_index: int  # record index in the split
    filename: str
    box: tuple[float, ...]  # the ground-truth box, or the detection for missing_box
    label: int  # the ground-truth label (0 for missing_box)
    model_box: Optional[tuple[float, ...]]
    model_label: int
    model_score: float

    def as_dict(self, class_names: Sequence[str], rank: int) -> dict:
        """The --json object."""
        name = (lambda label: class_names[label - 1] if 1 <= label <= len(class_names) else "")
        out = {"rank": rank, "kind": self.kind, "score": round(self.score, 4), "file": self.filename,
               "image_index": self.image_index, "box": [round(v, 1) for v in self.box], "class": name(self.label)}
        if self.model_box is not None:
            out.update(model_box=[round(v, 1) for v in self.model_box], model_class=name(self.model_label),
                       model_score=round(self.model_score, 4))
        return out


def image_suspects(gt: GroundTruth, det: Detections, image_index: int, filename: str) -> list[Suspect]:
    """The suspects of one image from its ground truth and the model's detections (any score)."""
    iou = iou_matrix(gt.boxes, det.boxes)  # [G, D]
    out: list[Suspect] = []
    for d in range(len(det.boxes)):
        best = float(iou[:, d].max()) if len(gt.boxes) else 0.0
        if best < MATCH_IOU and det.scores[d] >= CONFIDENT:
            out.append(Suspect("missing_box", float(det.scores[d]) * (1.0 - best), image_index, filename,
                               _box(det.boxes[d]), 0, _box(det.boxes[d]), int(det.labels[d]), float(det.scores[d])))
    for g in range(len(gt.boxes)):
        label = int(gt.labels[g])
        matched = iou[g] >= MATCH_IOU
        same = matched & (det.labels == label)
        s_same = float(det.scores[same].max()) if same.any() else 0.0
        other = matched & (det.labels != label)
        if other.any():
            d = int(np.flatnonzero(other)[np.argmax(det.scores[other])])
            if det.scores[d] > s_same and det.scores[d] >= CONFIDENT:
                out.append(Suspect("swapped_label", float(det.scores[d]) * (1.0 - s_same), image_index, filename,
                                   _box(gt.boxes[g]), label, _box(det.boxes[d]), int(det.labels[d]),
                                   float(det.scores[d])))
                continue
        if s_same >= CONFIDENT:
            continue
        nearby = (iou[g] >= NEARBY_IOU) & ~matched & (det.labels == label)
        model_box, model_score = None, s_same
        s_near = 0.0
        if nearby.any():
            d = int(np.flatnonzero(nearby)[np.argmax(det.scores[nearby])])
            model_box, s_near = _box(det.boxes[d]), float(det.scores[d])
            model_score = s_near
        out.append(Suspect("wrong_box", (1.0 - s_same) * (0.5 + 0.5 * s_near), image_index, filename,
                           _box(gt.boxes[g]), label, model_box, label if model_box is not None else 0, model_score))
    return out


def rank_suspects(gts: Sequence[GroundTruth], dets: Sequence[Detections]) -> list[Suspect]:
    """Every suspect of a split, likeliest first (ties: image order)."""
    found = []
    for i, (gt, det) in enumerate(zip(gts, dets)):
        filename = gt.image_id.split(":", 1)[1] if ":" in gt.image_id else gt.image_id
        found += image_suspects(gt, det, i, filename)
    return sorted(found, key=lambda s: (-s.score, s.image_index))


def find_suspects(checkpoint: str, split: str = "train", dataset_dir: Optional[str] = None,
                  limit: Optional[int] = None, show_progress: bool = True) -> tuple[list[Suspect], list[str], str]:
    """(suspects likeliest first, class names, dataset dir) of a run's model over a converted split.

    The dataset is the run's dataset.dir unless `dataset_dir` is given; its classes.json must match the model's
    classes by name (eval/class_map.py). Detections are those `detkit eval` scores (any score above the model's
    postprocess.score_threshold).
    """
    detector = Detector.from_checkpoint(checkpoint)
    directory = dataset_dir or detector.config.dataset.dir
    if not directory:
        raise DatasetError(f"{checkpoint}: the run names no dataset.dir; give --dataset-dir")
    names = read_classes(directory)
    try:
        mapping = label_map(detector.class_names, names)
    except ValueError as exc:
        raise DatasetError(f"{directory}: {exc} ({checkpoint} detects {', '.join(detector.class_names)})") from None
    gts, dets = collect(detector, detector.config, directory, split, show_progress, limit, label_map=mapping)
    return rank_suspects(gts, dets), names, directory


def format_suspects(suspects: Sequence[Suspect], class_names: Sequence[str], top: int) -> str:
    """The first `top` suspects (0: all) as an aligned table."""
    def name(label: int) -> str:
        return class_names[label - 1] if 1 <= label <= len(class_names) else "-"

    lines = [f"{len(suspects)} suspects; the likeliest first:",
             f"{'rank':>4} {'score':>6}  {'kind':<13} {'image':<28} {'labelled':<12} {'box':<24} model says"]
    for rank, s in enumerate(suspects[:top] if top > 0 else suspects, start=1):
        box = "[" + ", ".join(f"{v:.0f}" for v in s.box) + "]"
        says = f"{name(s.model_label)} {s.model_score:.2f}" if s.model_label else "nothing there"
        if s.kind == "missing_box":
            says = f"{name(s.model_label)} {s.model_score:.2f}, unlabelled"
        lines.append(f"{rank:>4} {s.score:>6.3f}  {s.kind:<13} {s.filename[:28]:<28} {name(s.label):<12} {box:<24} "
                     f"{says}")
    return "\n".join(lines)


def draw_suspects(suspects: Sequence[Suspect], class_names: Sequence[str], dataset_dir: str, split: str,
                  count: int, draw_dir: str) -> list[str]:
    """Write the first `count` suspects drawn on their images (labelled box dashed, the model's solid)."""
    chosen = list(suspects[:count])
    wanted = {s.image_index for s in chosen}
    images: dict[int, bytes] = {}
    for i, rec in enumerate(iter_records(dataset_dir, split, with_images=True)):
        if i in wanted:
            images[i] = rec["image"]
        if len(images) == len(wanted):
            break
    os.makedirs(draw_dir, exist_ok=True)
    written = []
    name = (lambda label: class_names[label - 1] if 1 <= label <= len(class_names) else "?")
    for rank, s in enumerate(chosen, start=1):
        boxes, texts = [], []
        if s.kind != "missing_box":
            boxes.append(s.box)
            texts.append(f"{s.kind}: labelled {name(s.label)}")
        if s.model_box is not None:
            boxes.append(s.model_box)
            texts.append(f"model: {name(s.model_label)} {s.model_score:.2f}"
                         + (" (unlabelled)" if s.kind == "missing_box" else ""))
        with Image.open(io.BytesIO(images[s.image_index])) as im:
            drawn = draw_detections(im, boxes, texts)
        buf = io.BytesIO()
        drawn.save(buf, format="JPEG", quality=90)
        stem = os.path.splitext(os.path.basename(s.filename))[0] or "image"
        path = os.path.join(draw_dir, f"{rank:03d}-{s.kind}-{stem}.jpg")
        write_bytes(path, buf.getvalue())
        written.append(path)
    return written


def _box(values: np.ndarray) -> tuple[float, ...]:
    """A box as a tuple of floats."""
    return tuple(float(v) for v in values)


__all__ = ["Suspect", "draw_suspects", "find_suspects", "format_suspects", "image_suspects",
           "rank_suspects"]
