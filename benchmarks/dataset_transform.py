"""Benchmark `detkit dataset transform`: convert the 200 raccoon photos (CSV) and print one JSON line.

Usage: python benchmarks/dataset_transform.py [--data ../shared/datasets/raccoon] [--repeat 3] [--workers 2]

`seconds` is the median wall time of one conversion (reading annotations, decoding every image
to validate it, writing the TFRecord, summary and classes.json); TensorFlow's one-off import is
timed separately as `tensorflow_import_seconds`, since it does not grow with the dataset.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    """Run the conversion `--repeat` times into temporary directories and report the median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    from detkit.utils.tf_quiet import import_tensorflow

    import_tensorflow()
    tf_seconds = time.perf_counter() - start

    from detkit.datasets.readers import Source
    from detkit.datasets.transform import TransformOptions, transform

    source = Source(annotations=os.path.join(args.data, "data", "raccoon_labels.csv"),
                    images_dir=os.path.join(args.data, "images"))
    times, images = [], 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            opts = TransformOptions(fmt="csv", output_dir=os.path.join(tmp, "out"), splits=["all"], source=source,
                                    workers=args.workers)
            t0 = time.perf_counter()
            images = transform(opts)["all"]["images"]
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    print(json.dumps({
        "benchmark": "dataset_transform", "images": images, "seconds": round(seconds, 4),
        "images_per_second": round(images / seconds, 1), "runs": [round(t, 4) for t in times],
        "workers": args.workers, "tensorflow_import_seconds": round(tf_seconds, 2),
    }))


if __name__ == "__main__":
    main()
