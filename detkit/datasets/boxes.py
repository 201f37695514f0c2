"""Make pixel boxes valid for their image: clip what sticks out, drop what has no area."""
from __future__ import annotations

from dataclasses import dataclass, field

from detkit.datasets.example import Example


@dataclass
class BoxReport:
    """What happened to the boxes of one split."""

    clipped: int = 0
    dropped: int = 0
    # One entry per dropped box ({file, class, box, reason}), kept up to MAX_DETAILS.
    dropped_details: list[dict] = field(default_factory=list)

    MAX_DETAILS = 1000

    def drop(self, example: Example, index: int, reason: str) -> None:
        """Count a dropped box and remember why."""
        self.dropped += 1
        if len(self.dropped_details) < self.MAX_DETAILS:
            self.dropped_details.append({
                "file": example.source, "class": example.classes[index],
                "box": [round(v, 3) for v in example.boxes[index]], "reason": reason,
            })


def sanitize_boxes(example: Example, report: BoxReport) -> Example:
    """Clip boxes to [0, width] x [0, height] and drop inverted, zero-area and outside boxes.

    `example.width`/`height` must be the decoded image size.
    """
    keep, boxes = [], []
    w, h = example.width, example.height
    for i, (x0, y0, x1, y1) in enumerate(example.boxes):
        if x1 < x0 or y1 < y0:
            report.drop(example, i, "inverted (max < min)")
            continue
        if x1 == x0 or y1 == y0:
            report.drop(example, i, "zero area")
            continue
        cx0, cy0, cx1, cy1 = min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)
        if cx1 <= cx0 or cy1 <= cy0:
            report.drop(example, i, f"outside the {w}x{h} image")
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            report.clipped += 1
        keep.append(i)
        boxes.append((cx0, cy0, cx1, cy1))
    return example.keep_boxes(keep).with_boxes(boxes)
