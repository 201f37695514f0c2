"""Whether two converted folders hold the same records: what an export round trip must give back."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from detkit.datasets.classes import read_classes
from detkit.datasets.tfrecord import iter_records

FIELDS = ("image", "format", "filename", "source_id", "height", "width", "boxes", "labels", "label_text", "difficult",
          "is_crowd")


def record_differences(dir_a: str, dir_b: str, split: str, ignore: Sequence[str] = (), limit: int = 10) -> list[str]:
    """Up to `limit` differences between the records of `split` in two folders, matched by image/filename.

    Boxes must be equal as float32 (not merely close); `ignore` names fields of tfrecord.parse_example to skip
    (e.g. "source_id", which a round trip through COCO turns into an image id).
    """
    out: list[str] = []
    if read_classes(dir_a) != read_classes(dir_b):
        out.append(f"classes.json: {read_classes(dir_a)} != {read_classes(dir_b)}")
    a = {r["filename"]: r for r in iter_records(dir_a, split, with_images=True)}
    b = {r["filename"]: r for r in iter_records(dir_b, split, with_images=True)}
    if sorted(a) != sorted(b):
        missing = sorted(set(a) ^ set(b))
        out.append(f"{len(missing)} images in one folder only, e.g. {missing[0].decode()}")
    for name in sorted(set(a) & set(b)):
        for key in FIELDS:
            if key in ignore:
                continue
            x, y = np.asarray(a[name][key]), np.asarray(b[name][key])
            if x.shape != y.shape or not np.array_equal(x, y):
                shown = "<bytes>" if key == "image" else f"{x.tolist()} != {y.tolist()}"
                out.append(f"{name.decode()}: {key}: {shown}")
        if len(out) >= limit:
            break
    return out[:limit]
