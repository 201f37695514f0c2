"""Benchmark `detkit dataset check` on 1,000 photos (a CSV source) and print one JSON line.

Usage: python benchmarks/dataset_check.py [--shared ../shared/datasets] [--count 1000] [--workers 2]
                                          [--synthetic 4032x3024] [--repeat 3]

By default the photos are those of the shared raccoon, bccd and cards sets (927, listed again from the start up
to --count); --synthetic WxH writes --count JPEGs of that size instead (photo-like noise and gradients, quality
90: a phone's 12 MP photos by default). Every image is read once: its bytes hashed, its EXIF orientation read,
decoded at 1/8 scale (which still reads every byte, so truncation is caught) for the perceptual hash. `seconds` is
the median wall time of the whole check (annotations, images, pairwise hash comparison); `load_average` says
how busy the machine was.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def shared_photos(shared: str) -> list[str]:
    """The photos of the shared sets, sorted."""
    patterns = ["raccoon/images/*.jpg", "bccd/JPEGImages/*.jpg", "cards/train/*.*", "cards/test/*.*"]
    return [p for pat in patterns for p in sorted(glob.glob(os.path.join(shared, pat)))
            if p.lower().endswith((".jpg", ".jpeg", ".png"))]


def synthetic_photos(folder: str, count: int, size: tuple[int, int]) -> list[str]:
    """`count` JPEGs of `size`, each different."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    paths = []
    for i in range(count):
        # Blocks of noise 8 pixels wide over a gradient: texture a JPEG has to spend bytes on, like a photo.
        noise = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
        path = os.path.join(folder, f"photo-{i:04d}.jpg")
        Image.blend(base, noise, 0.3).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    """Build the CSV source, run the check --repeat times, report the median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--synthetic", default=None, metavar="WxH")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    from detkit.datasets.check import CheckOptions, check
    from detkit.datasets.readers import Source

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            size = tuple(int(v) for v in args.synthetic.lower().split("x"))
            photos = synthetic_photos(tmp, args.count, size)  # type: ignore[arg-type]
        else:
            found = shared_photos(args.shared)
            if not found:
                raise SystemExit(f"no photos under {args.shared}: give --shared or --synthetic")
            photos = [found[i % len(found)] for i in range(args.count)]
        images = os.path.join(tmp, "images")
        os.makedirs(images)
        lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
        megapixels = 0.0
        for i, path in enumerate(photos):
            name = f"{i:04d}-{os.path.basename(path)}"
            os.symlink(os.path.abspath(path), os.path.join(images, name))
            with Image.open(path) as im:
                w, h = im.size
            megapixels += w * h / 1e6
            lines.append(f"{name},{w},{h},thing,{w // 4},{h // 4},{w // 2},{h // 2}")
        with open(os.path.join(tmp, "labels.csv"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        opts = CheckOptions(fmt="csv", splits=["all"], workers=args.workers,
                            source=Source(annotations=os.path.join(tmp, "labels.csv"), images_dir=images))
        times, report = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = check(opts)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(json.dumps({
        "benchmark": "dataset_check", "images": args.count, "source": args.synthetic or "shared raccoon+bccd+cards",
        "mean_megapixels": round(megapixels / args.count, 2), "workers": args.workers, "seconds": round(seconds, 2),
        "images_per_second": round(args.count / seconds, 1), "runs": [round(t, 2) for t in times],
        "findings": dict(report.kind_counts()) if report else {}, "tensorflow_imported": "tensorflow" in sys.modules,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
