"""What `detkit dataset check` reports: one Finding per problem, of a kind with a severity, grouped in a CheckReport."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from detkit.errors import DatasetError

ERROR = "error"  # would break training (or teach it wrong boxes): transform and train stop
WARNING = "warning"  # worth fixing; training works
NOTE = "note"  # reported for information (images without boxes are useful negatives)

# kind -> (what is wrong, what to do); the order is the report's.
KINDS: dict[str, tuple[str, str]] = {
    "bad_annotation": ("annotations that cannot be read",
                       "fix the file and line named, or --skip-bad to leave those images out"),
    "unreadable_image": ("images that are missing, unreadable, truncated or of a format detkit cannot store",
                         "replace the file (transform skips it)"),
    "exif_mismatch": ("photos with an EXIF orientation whose boxes were drawn on the other orientation",
                      "--fix moves boxes drawn on the upright photo onto the stored pixels detkit trains on"),
    "size_mismatch": ("images whose annotated size is not their real size (boxes may be scaled)",
                      "check the annotation was made on this image"),
    "box_outside": ("boxes sticking out of their image (YOLO: coordinates outside [0, 1])",
                    "transform and --fix clip them to the image, and drop those wholly outside"),
    "box_degenerate": ("boxes of zero or negative width or height",
                       "transform and --fix drop them; redraw the object if it is real"),
    "duplicate_box": ("the same box of the same class twice in one image (exactly, or IoU >= 0.9)",
                      "--fix keeps the first"),
    "duplicate_image": ("the same photo twice in one split (same bytes, or near-identical pixels)",
                        "remove one copy: its boxes weigh twice"),
    "cross_split_duplicate": ("the same photo in two splits: evaluation leaks into training",
                              "keep each photo in one split only"),
    "class_name_variant": ("class names that differ only by case, spaces or plural",
                           "--fix --merge-classes FROM=TO makes them one class"),
    "rare_class": ("classes with fewer than a handful of boxes in a split, or absent from it",
                   "label more examples, or merge or drop the class"),
    "empty_image": ("images without any box", "kept: they teach the model what is background"),
}


@dataclass(frozen=True)
class Finding:
    """One problem: where it is (the annotation file and line, or the image), what is wrong, what to do."""

    kind: str
    severity: str
    file: str  # the annotation location, or the image for image findings
    message: str
    split: str = ""
    image: str = ""  # the image file
    box: Optional[tuple[float, ...]] = None  # pixels of the stored image
    class_name: str = ""
    fix: str = ""  # what --fix does about it, or what to do
    other: str = ""  # the other image or box of a duplicate
    index: int = -1  # the example's index in its split (-1: not about one example)
    box_index: int = -1

    def as_dict(self) -> dict[str, Any]:
        """The --json object."""
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity, "split": self.split, "file": self.file}
        if self.image:
            out["image"] = self.image
        if self.box is not None:
            out["box"] = [round(v, 2) for v in self.box]
        if self.class_name:
            out["class"] = self.class_name
        out["message"] = self.message
        if self.other:
            out["other"] = self.other
        out["fix"] = self.fix or KINDS[self.kind][1]
        return out


@dataclass
class SplitCounts:
    """The size of a checked split."""

    images: int = 0
    boxes: int = 0
    classes: Counter = field(default_factory=Counter)  # boxes per class


@dataclass
class CheckReport:
    """Every finding of a check, and what was checked."""

    findings: list[Finding]
    splits: dict[str, SplitCounts]
    images_read: bool = True  # False when only annotations were checked
    facts: dict = field(default_factory=dict, repr=False)  # (split, index) -> ImageFacts, for --fix

    def by_severity(self, severity: str) -> list[Finding]:
        """The findings of one severity."""
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        """Findings that would break training."""
        return self.by_severity(ERROR)

    def kind_counts(self, severity: Optional[str] = None) -> Counter:
        """Findings per kind (of one severity, or all)."""
        return Counter(f.kind for f in self.findings if severity is None or f.severity == severity)

    def summary(self) -> dict[str, Any]:
        """Counts for <split>-summary.json and scripts."""
        return {sev + "s": len(self.by_severity(sev)) for sev in (ERROR, WARNING, NOTE)} | {
            "kinds": dict(sorted(self.kind_counts().items(), key=lambda kv: list(KINDS).index(kv[0])))}


class CheckFailed(DatasetError):
    """`dataset check` found what would break training; `report` holds every finding."""

    def __init__(self, message: str, report: object):
        """One-line `message`; the full CheckReport in `report`."""
        super().__init__(message)
        self.report = report
