"""Export round trips on the shared raccoon, bccd and cards sets: convert, export (COCO, VOC, YOLO), convert the
export again, and compare the records. Prints one JSON line.

Usage: python benchmarks/export_roundtrip.py [--shared ../shared/datasets] [--work DIR]

"identical" means every record of every split has the same image bytes, file name, size, boxes (as float32),
labels, class names and difficult/crowd flags; COCO numbers its images, so there source_id (the image id) is the
one field not compared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def convert(fmt: str, out: str, splits: dict) -> None:
    """Convert each split (a Source per split) into `out`."""
    from detkit.datasets.transform import TransformOptions, transform

    for i, (split, source) in enumerate(splits.items()):
        transform(TransformOptions(fmt=fmt, output_dir=out, splits=[split], source=source, overwrite=i > 0,
                                   check=False))


def main() -> None:
    """Round-trip the three sets through every export format."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    from detkit.datasets.compare import record_differences
    from detkit.datasets.export import ExportOptions, export
    from detkit.datasets.readers import CONVERTED, Source
    from detkit.datasets.tfrecord import list_splits

    s = args.shared
    sets = {
        "raccoon": ("csv", {sp: Source(annotations=f"{s}/raccoon/data/{sp}_labels.csv", images_dir=f"{s}/raccoon/images")
                            for sp in ("train", "test")}),
        "bccd": ("voc", {sp: Source(data_dir=f"{s}/bccd") for sp in ("train", "val", "test")}),
        "cards": ("voc", {sp: Source(data_dir=f"{s}/cards/{sp}") for sp in ("train", "test")}),
    }
    results: dict = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for name, (fmt, splits) in sets.items():
            original = os.path.join(work, name)
            convert(fmt, original, splits)
            results[name] = {}
            for to in ("voc", "coco", "yolo"):
                exported = os.path.join(work, f"{name}-{to}")
                export(ExportOptions(to=to, output_dir=exported, fmt=CONVERTED, source=Source(data_dir=original)))
                back = os.path.join(work, f"{name}-{to}-back")
                convert(to, back, {sp: Source(data_dir=exported) for sp in list_splits(original)})
                ignore = ["source_id"] if to == "coco" else []
                diffs = [d for sp in list_splits(original) for d in record_differences(original, back, sp, ignore)]
                results[name][to] = "identical" if not diffs else diffs[:3]
    print(json.dumps({"benchmark": "export_roundtrip", "results": results,
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
