"""The check's rules: pure functions from examples (and the facts of their images) to findings."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

from detkit.datasets.check.findings import ERROR, NOTE, WARNING, Finding
from detkit.datasets.check.images import ImageFacts
from detkit.datasets.example import Example, PixelBox, Problem
from detkit.datasets.orientation import SWAPS_AXES

RARE_BOXES = 5  # a class with fewer boxes than this in a split is reported
NEAR_DUPLICATE_IOU = 0.9
MOVE_BOXES = "--fix moves the boxes onto the stored pixels"
FIT_SLACK = 1.0  # pixels a box may pass the image edge and still "fit" one orientation (EXIF rule only)


def box_iou(a: PixelBox, b: PixelBox) -> float:
    """Intersection over union of two pixel boxes (0 when either has no area)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def fits(boxes: Sequence[PixelBox], width: float, height: float, slack: float = FIT_SLACK) -> bool:
    """Whether every box lies within a `width` x `height` image, give or take `slack` pixels."""
    return all(x0 >= -slack and y0 >= -slack and x1 <= width + slack and y1 <= height + slack
               for x0, y0, x1, y1 in boxes)


def annotation_frame(example: Example, facts: ImageFacts) -> str:
    """Which pixels the boxes were drawn on, as far as sizes tell.

    "stored"; "upright" (only the photo turned upright by EXIF holds them); "upright_by_size" (they fit both, but the
    annotated size is the upright one); "stored_by_boxes" (the annotated size is the upright one, but only the stored
    pixels hold them); "unclear" (a 180-degree turn or a flip, or a square photo: sizes cannot tell).
    """
    w, h, o = facts.width, facts.height, facts.orientation
    if o == 1 or not example.boxes:
        return "stored"
    if o not in SWAPS_AXES or w == h:
        return "unclear"
    declared = (example.width, example.height) if example.width and example.height else None
    in_stored, in_upright = fits(example.boxes, w, h), fits(example.boxes, h, w)
    if in_upright and not in_stored:
        return "upright"
    if declared == (h, w):
        return "upright_by_size" if in_stored else "stored_by_boxes"
    return "stored"


def problem_findings(split: str, problems: Iterable[Problem], skip_bad: bool) -> list[Finding]:
    """Annotations a reader could not use: fatal to transform unless --skip-bad."""
    severity = WARNING if skip_bad else ERROR
    fix = "left out (--skip-bad)" if skip_bad else ""
    return [Finding("bad_annotation", severity, p.file, p.reason, split=split, fix=fix) for p in problems]


def image_findings(split: str, index: int, example: Example, facts: Optional[ImageFacts], converted: bool,
                   yolo: bool = False) -> list[Finding]:
    """Everything wrong with one image and its boxes; `facts` is None when images were not read."""
    where = dict(split=split, image=example.image_path, index=index)
    if facts is not None and facts.problem:
        severity = ERROR if converted else WARNING  # transform skips the image; a record would stop training
        return [Finding("unreadable_image", severity, example.image_path, facts.problem, **where)]
    out: list[Finding] = []
    size = (facts.width, facts.height) if facts is not None else (example.width, example.height)
    frame = annotation_frame(example, facts) if facts is not None else "stored"
    if frame in ("upright", "upright_by_size"):
        w, h = size
        what = ("the boxes fit only" if frame == "upright" else
                f"the annotated size {example.width}x{example.height} is that of")
        out.append(Finding("exif_mismatch", ERROR if frame == "upright" else WARNING, example.source,
                           f"{what} the photo turned upright by its EXIF orientation {facts.orientation} ({h}x{w}), "
                           f"but detkit trains on its stored {w}x{h} pixels: they mark the wrong places",
                           fix=MOVE_BOXES, **where))
    elif frame == "stored_by_boxes":
        out.append(Finding("exif_mismatch", WARNING, example.source,
                           f"the annotated size {example.width}x{example.height} is the photo turned upright by its "
                           f"EXIF orientation {facts.orientation}, but the boxes fit only the stored {facts.width}x"
                           f"{facts.height} pixels: kept as they are",
                           fix="check the boxes on the stored pixels (`detkit dataset inspect --draw`)", **where))
    elif facts is not None and example.width and example.height and (example.width, example.height) != size:
        out.append(Finding("size_mismatch", WARNING, example.source,
                           f"annotated as {example.width}x{example.height} but the image is {size[0]}x{size[1]}",
                           **where))
    if frame not in ("upright", "upright_by_size"):
        out += box_findings(split, index, example, size, converted, yolo)
    out += duplicate_box_findings(split, index, example)
    if not example.boxes:
        out.append(Finding("empty_image", NOTE, example.source, "no boxes", **where))
    return out


def box_findings(split: str, index: int, example: Example, size: tuple[int, int], converted: bool,
                 yolo: bool = False) -> list[Finding]:
    """Boxes of zero or negative size, and boxes sticking out of a `size` image (unknown size: (0, 0))."""
    out = []
    w, h = size
    severity = ERROR if converted else WARNING  # transform clips and drops; records go to training as they are
    for j, (box, name) in enumerate(zip(example.boxes, example.classes)):
        where = dict(split=split, image=example.image_path, box=box, class_name=name, index=index, box_index=j)
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            what = "zero width" if x1 == x0 else "negative width" if x1 < x0 else ""
            what = what or ("zero height" if y1 == y0 else "negative height")
            out.append(Finding("box_degenerate", severity, example.source, f"{name}: {what}",
                               fix="transform and --fix drop it", **where))
            continue
        if not w or not h or (x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h):
            continue
        outside = x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h
        if yolo:
            cx0, cy0, cx1, cy1 = x0 / w, y0 / h, x1 / w, y1 / h
            what = f"YOLO coordinates not in [0, 1] (x {cx0:.4g} to {cx1:.4g}, y {cy0:.4g} to {cy1:.4g})"
        else:
            what = f"{'wholly outside' if outside else 'sticks out of'} the {w}x{h} image"
        out.append(Finding("box_outside", severity, example.source, f"{name}: {what}",
                           fix="transform and --fix drop it" if outside else "transform and --fix clip it", **where))
    return out


def duplicate_box_findings(split: str, index: int, example: Example) -> list[Finding]:
    """A box of the same class as an earlier one of the image, at the same place (IoU >= NEAR_DUPLICATE_IOU)."""
    out = []
    for j, (box, name) in enumerate(zip(example.boxes, example.classes)):
        for k in range(j):
            if example.classes[k] != name:
                continue
            same = box == example.boxes[k]
            iou = 1.0 if same else box_iou(box, example.boxes[k])
            if same or iou >= NEAR_DUPLICATE_IOU:
                what = "the same box" if same else f"overlaps box #{k + 1} with IoU {iou:.2f}"
                out.append(Finding("duplicate_box", WARNING, example.source,
                                   f"{name} box #{j + 1}: {what}" + (f" as box #{k + 1}" if same else ""),
                                   split=split, image=example.image_path, box=box, class_name=name, index=index,
                                   box_index=j, other=f"box #{k + 1} {[round(v, 2) for v in example.boxes[k]]}",
                                   fix="--fix keeps the first"))
                break
    return out


class _UnionFind:
    """Groups of items joined pairwise."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def duplicate_image_findings(images: Sequence[tuple[str, int, Example]], facts: Sequence[Optional[ImageFacts]],
                             near_pairs: Iterable[tuple[int, int, int]]) -> list[Finding]:
    """The same photo twice: `images` are (split, index in split, example) in split order; near_pairs are (i, j,
    differing bits) of indices into `images`.

    Each group of copies keeps its first; every later copy is reported once, against the first copy in its own
    split (duplicate_image) or, when it is in another split than the group's first, against that (cross-split).
    """
    uf = _UnionFind(len(images))
    how: dict[tuple[int, int], str] = {}
    by_digest: dict[str, int] = {}
    for i, f in enumerate(facts):
        if f is None or not f.sha256 or f.problem:
            continue
        if f.sha256 in by_digest:
            uf.join(by_digest[f.sha256], i)
        else:
            by_digest[f.sha256] = i
    for i, j, bits in near_pairs:
        if facts[i].sha256 != facts[j].sha256:  # type: ignore[union-attr]
            uf.join(i, j)
            how[(i, j)] = f"near-identical ({bits} of 64 perceptual-hash bits differ)"
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(images)):
        groups[uf.find(i)].append(i)
    out = []
    for members in groups.values():
        first = members[0]
        for m in members[1:]:
            split, index, example = images[m]
            cross = split != images[first][0]
            same = facts[m].sha256 == facts[first].sha256  # type: ignore[union-attr]
            what = "the same bytes" if same else how.get((first, m), "near-identical (through another copy)")
            other_split, _, other = images[first]
            out.append(Finding("cross_split_duplicate" if cross else "duplicate_image", WARNING, example.image_path,
                               f"{what} as {other.image_path}" + (f" in split {other_split}" if cross else ""),
                               split=split, image=example.image_path, other=other.image_path, index=index))
    return out


def singular(word: str) -> str:
    """A plural English noun's singular, by the common endings (boxes -> box, puppies -> puppy, cats -> cat)."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def name_key(name: str) -> str:
    """A class name with case, spaces, '_' and '-' ignored."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def class_findings(split_counts: dict[str, Counter], first_seen: dict[str, str],
                   known: Sequence[str] = ()) -> list[Finding]:
    """Class names that are variants of one another, and classes rare in (or absent from) a split."""
    totals: Counter = Counter()
    for counts in split_counts.values():
        totals.update(counts)
    names = sorted(set(totals) | set(known))
    out = []
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[" ".join(singular(w) for w in name_key(name).split())].append(name)
    for variants in groups.values():
        if len(variants) < 2:
            continue
        target = max(variants, key=lambda n: (totals[n], -variants.index(n)))
        for name in variants:
            if name == target:
                continue
            exact = name_key(name) == name_key(target)
            what = "case or spacing" if exact else "plural"
            out.append(Finding(
                "class_name_variant", ERROR if exact else WARNING, first_seen.get(name, ""),
                f"class {name!r} ({totals[name]} boxes) differs from {target!r} ({totals[target]} boxes) only by "
                f"{what}: trained as two classes", class_name=name, other=target,
                fix=f"--fix OUT --merge-classes '{name}={target}'"))
    # A class can be absent from a split only when other splits (or classes.json) name it.
    absence_known = len(split_counts) > 1 or bool(known)
    for split, counts in split_counts.items():
        for name in names:
            n = counts[name]
            if n >= RARE_BOXES or (n == 0 and not absence_known):
                continue
            what = f"no box of {name!r} in split {split}" if n == 0 else (
                f"only {n} box{'es' if n > 1 else ''} of {name!r} in split {split}")
            out.append(Finding("rare_class", WARNING, first_seen.get(name, ""), what, split=split, class_name=name))
    return out
