"""Synthetic small-object datasets made from the shared photos, in the CSV layout `detkit dataset transform` reads.

    python benchmarks/small_objects.py --out DIR [--set NAME ...] [--seed 0] [--shared ../shared/datasets]

Each set goes to DIR/NAME: train.csv + train/, test.csv + test/ (photos as JPEG, one CSV row per box:
filename,width,height,class,xmin,ymin,xmax,ymax). Convert one with
`detkit dataset transform --type csv --data-dir DIR/NAME --split train --split test --output-dir DATA`, or give
DIR/NAME to `train_recipe.py --data` (or name it `train_recipe.py --dataset small:NAME`, which makes it first).
The same seed writes the same files. Prints the sizes of each split's objects as JSON (also DIR/NAME/summary.json).

Sets:
  down-raccoon, down-cards, down-bccd
      every photo of a shared set (its own train/test split) downscaled with its boxes, by the factor that brings
      the photo's median box to a side (square root of the area) drawn from 15-40 px
  crowded
      700 train + 150 test photos of at most 400 px, each with 10-100 objects (log-uniform) pasted at a side of
      12-40 px (log-uniform, median ~22): crops of the shared cards, raccoons and blood cells (classes card, raccoon,
      cell), edges feathered, at most 20% of either box covered by another, on backgrounds tiled from the parts of
      the raccoon and cards photos that hold no box; imitates a held-out set of small crowded faces
  crowded-large
      the same objects on 1600-2400 px photos (200 + 50), where a photo resized to a detector's input leaves its
      objects a few pixels wide: a case for tiles
Train photos use only the shared sets' training splits (objects and backgrounds), test photos only their test splits.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MADE_BY = "benchmarks/small_objects.py"

DOWN = {"down-raccoon": "raccoon", "down-cards": "cards", "down-bccd": "bccd"}
DOWN_SIDE = (15.0, 40.0)  # px: the median box of each downscaled photo


@dataclass(frozen=True)
class Pasted:
    """A set of objects pasted on tiled backgrounds."""

    long_side: tuple[int, int]  # px, of each photo
    grid: tuple[int, int]  # background tiles per row and column
    images: tuple[int, int]  # train, test


PASTED = {"crowded": Pasted((300, 400), (1, 3), (700, 150)), "crowded-large": Pasted((1600, 2400), (3, 5), (200, 50))}
SETS = (*DOWN, *PASTED)
OBJECT_SOURCES = {"card": "cards", "cell": "bccd", "raccoon": "raccoon"}  # class -> shared set its crops come from
BACKGROUND_SOURCES = ("raccoon", "cards")  # bccd's smears hold unlabelled cells everywhere
OBJECT_SIDE = (12.0, 40.0)  # px
OBJECTS_PER_IMAGE = (10, 100)
MAX_COVERED = 0.2  # of either box, by the other
MIN_CROP_SIDE = 24  # px: smaller source boxes would be upscaled
CROP_SIZE = 96  # px: crops are kept at most this size (pasted at <= 40)
BACKGROUND_SIZE = 320  # px: background pieces kept at most this size
ASPECT = (0.6, 1.0)  # short side / long side of a pasted set's photos


# ---------------------------------------------------------------- reading the shared sets
def read_photos(name: str, shared: str, split: str) -> list:
    """The annotated photos (detkit `Example`s: image_path, boxes in pixels, classes) of a shared set's
    training ("train") or test split, read by detkit's own readers."""
    from detkit.datasets.example import Example
    from detkit.datasets.readers import Source, get_reader
    from shared_sets import shared_layout  # beside this script

    fmt, sources, train_split = shared_layout(name, shared)
    wanted = train_split if split == "train" else split
    for source, splits in sources:
        if wanted in splits:
            items = list(get_reader(fmt)(Source(**source), wanted))
            bad = [item for item in items if not isinstance(item, Example)]
            if bad:
                raise SystemExit(f"{name} {wanted}: {bad[0].message()}")
            return items
    raise SystemExit(f"{name} has no split {wanted!r}")


def load_rgb(path: str):
    """A photo as an RGB Pillow image, stored pixels (no EXIF rotation, as detkit reads them)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def pixel_boxes(example, size: tuple[int, int]) -> np.ndarray:
    """An example's boxes as an [N, 4] float array clipped to the image."""
    boxes = np.asarray(example.boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes, 0, [size[0], size[1], size[0], size[1]])


def sides(boxes: np.ndarray) -> np.ndarray:
    """sqrt(width * height) of [N, 4] boxes."""
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


# ---------------------------------------------------------------- downscaled photos
def downscaled(photos: list, rng: np.random.Generator) -> Iterator[tuple]:
    """(image, boxes, classes) of each photo shrunk so its median box side is drawn from DOWN_SIDE (never enlarged)."""
    from PIL import Image

    for example in photos:
        image = load_rgb(example.image_path)
        boxes = pixel_boxes(example, image.size)
        target = rng.uniform(*DOWN_SIDE)
        median = float(np.median(sides(boxes))) if len(boxes) else 0.0
        scale = min(1.0, target / median) if median > 0 else 1.0
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        factor = np.array([size[0] / image.width, size[1] / image.height] * 2)
        yield image.resize(size, Image.Resampling.LANCZOS), boxes * factor, list(example.classes)


# ---------------------------------------------------------------- pasted objects
def object_crops(shared: str, split: str) -> dict[str, list]:
    """Crops of every box of at least MIN_CROP_SIDE px of the object sources, at most CROP_SIZE px, by class."""
    crops: dict[str, list] = {}
    for cls, name in OBJECT_SOURCES.items():
        crops[cls] = []
        for example in read_photos(name, shared, split):
            image = load_rgb(example.image_path)
            for x0, y0, x1, y1 in np.round(pixel_boxes(example, image.size)).astype(int):
                if min(x1 - x0, y1 - y0) >= MIN_CROP_SIDE:
                    crop = image.crop((x0, y0, x1, y1))
                    crop.thumbnail((CROP_SIZE, CROP_SIZE))
                    crops[cls].append(crop)
    return crops


def free_pieces(shared: str, split: str, rng: np.random.Generator, per_photo: int = 3, tries: int = 40) -> list:
    """Up to `per_photo` pieces of each background photo that overlap none of its boxes (2 px margin)."""
    pieces = []
    for name in BACKGROUND_SOURCES:
        for example in read_photos(name, shared, split):
            image = load_rgb(example.image_path)
            boxes = pixel_boxes(example, image.size) + [-2, -2, 2, 2]
            found = 0
            for _ in range(tries):
                side = rng.uniform(0.2, 0.6) * min(image.size)
                aspect = rng.uniform(0.75, 1.33)
                w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
                if w >= image.width or h >= image.height or min(w, h) < 32:
                    continue
                x, y = rng.uniform(0, image.width - w), rng.uniform(0, image.height - h)
                if np.any((boxes[:, 0] < x + w) & (boxes[:, 2] > x) & (boxes[:, 1] < y + h) & (boxes[:, 3] > y)):
                    continue
                piece = image.crop((round(x), round(y), round(x + w), round(y + h)))
                piece.thumbnail((BACKGROUND_SIZE, BACKGROUND_SIZE))
                pieces.append(piece)
                found += 1
                if found == per_photo:
                    break
    return pieces


def background(size: tuple[int, int], pieces: list, grid: tuple[int, int], rng: np.random.Generator):
    """A photo of `size` tiled k x k (k drawn from `grid`) with background pieces, each resized to its tile."""
    from PIL import Image, ImageOps

    k = int(rng.integers(grid[0], grid[1] + 1))
    xs, ys = np.linspace(0, size[0], k + 1).round().astype(int), np.linspace(0, size[1], k + 1).round().astype(int)
    canvas = Image.new("RGB", size)
    for i in range(k):
        for j in range(k):
            piece = pieces[int(rng.integers(len(pieces)))]
            if rng.random() < 0.5:
                piece = ImageOps.mirror(piece)
            canvas.paste(piece.resize((int(xs[i + 1] - xs[i]), int(ys[j + 1] - ys[j])), Image.Resampling.BILINEAR),
                         (int(xs[i]), int(ys[j])))
    return canvas


@functools.lru_cache(maxsize=8192)
def feather(w: int, h: int):
    """An alpha mask of w x h whose edges fade out over ~10% of the short side, so pastes have no hard seams."""
    from PIL import Image, ImageDraw, ImageFilter

    r = max(1.0, 0.1 * min(w, h))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle([r / 2, r / 2, w - 1 - r / 2, h - 1 - r / 2], fill=255)
    return mask.filter(ImageFilter.GaussianBlur(r / 2))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw whose logarithm is uniform in [log low, log high]."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def paste_objects(canvas, crops: dict[str, list], count: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Paste up to `count` objects on `canvas` (in place); their boxes [N, 4] and classes."""
    from PIL import Image, ImageOps

    names = sorted(crops)
    boxes = np.zeros((0, 4))
    classes: list[str] = []
    for _ in range(count):
        cls = names[int(rng.integers(len(names)))]
        crop = crops[cls][int(rng.integers(len(crops[cls])))]
        side, ratio = log_uniform(rng, *OBJECT_SIDE), crop.width / crop.height
        w, h = max(4, round(side * math.sqrt(ratio))), max(4, round(side / math.sqrt(ratio)))
        if w >= canvas.width or h >= canvas.height:
            continue
        for _ in range(30):
            x, y = int(rng.integers(0, canvas.width - w + 1)), int(rng.integers(0, canvas.height - h + 1))
            iw = np.clip(np.minimum(boxes[:, 2], x + w) - np.maximum(boxes[:, 0], x), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], y + h) - np.maximum(boxes[:, 1], y), 0, None)
            smaller = np.minimum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), w * h)
            if np.all(iw * ih <= MAX_COVERED * smaller):
                break
        else:
            continue  # no room left for it
        obj = crop.resize((w, h), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            obj = ImageOps.mirror(obj)
        canvas.paste(obj, (x, y), feather(w, h))
        boxes = np.vstack([boxes, [x, y, x + w, y + h]])
        classes.append(cls)
    return boxes, classes


def pasted(spec: Pasted, shared: str, split: str, count: int, rng: np.random.Generator) -> Iterator[tuple]:
    """(image, boxes, classes) of `count` photos with small objects pasted on tiled backgrounds."""
    crops, pieces = object_crops(shared, split), free_pieces(shared, split, rng)  # read now, before any photo

    def photos() -> Iterator[tuple]:
        for _ in range(count):
            long_side = int(rng.integers(spec.long_side[0], spec.long_side[1] + 1))
            short_side = round(long_side * rng.uniform(*ASPECT))
            size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
            canvas = background(size, pieces, spec.grid, rng)
            boxes, classes = paste_objects(canvas, crops, round(log_uniform(rng, *OBJECTS_PER_IMAGE)), rng)
            yield canvas, boxes, classes

    return photos()


# ---------------------------------------------------------------- writing and summing up
def quantiles(values: np.ndarray) -> dict:
    """min, p10, median, p90 and max of some values, rounded."""
    if not len(values):
        return {}
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return dict(zip(("min", "p10", "median", "p90", "max"), (round(float(v), 1) for v in q)))


def write_split(folder: str, split: str, items: Iterator[tuple], total: int, desc: str) -> dict:
    """Write SPLIT/NNNNN.jpg and SPLIT.csv under `folder`; the split's summary."""
    import csv

    from detkit.utils.progress import progress

    os.makedirs(os.path.join(folder, split))
    per_image, object_sides, relative, long_sides, classes = [], [], [], [], {}
    with open(os.path.join(folder, f"{split}.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for i, (image, boxes, names) in enumerate(progress(items, total=total, desc=desc, unit="photo")):
            filename = f"{i:05d}.jpg"
            image.save(os.path.join(folder, split, filename), quality=90)
            for (x0, y0, x1, y1), name in zip(boxes, names):
                writer.writerow([filename, image.width, image.height, name,
                                 *(f"{v:.2f}".rstrip("0").rstrip(".") for v in (x0, y0, x1, y1))])
                classes[name] = classes.get(name, 0) + 1
            if not names:  # a negative: one row without class and box
                writer.writerow([filename, image.width, image.height, "", "", "", "", ""])
            per_image.append(len(names))
            object_sides.extend(sides(boxes).tolist())
            relative.extend((sides(boxes) / max(image.size)).tolist())
            long_sides.append(max(image.size))
    return {"images": len(per_image), "objects": int(sum(per_image)),
            "objects_per_image": quantiles(np.array(per_image)), "object_side_px": quantiles(np.array(object_sides)),
            "object_side_over_photo_long_side": round(float(np.median(relative)), 4) if relative else None,
            "photo_long_side_px": quantiles(np.array(long_sides)), "classes": dict(sorted(classes.items()))}


def make_set(name: str, out: str, shared: str, seed: int = 0, overwrite: bool = False,
             counts: tuple[int | None, int | None] = (None, None)) -> dict:
    """Write set `name` to OUT/NAME (replacing only a folder this script made, with overwrite); its summary."""
    from detkit.utils.atomic import atomic_path, write_json

    if name not in SETS:
        raise SystemExit(f"unknown set {name!r}; expected one of {', '.join(SETS)}")
    folder = os.path.join(os.path.abspath(out), name)
    if os.path.exists(folder):
        try:
            with open(os.path.join(folder, "summary.json"), encoding="utf-8") as fh:
                ours = json.load(fh).get("made_by") == MADE_BY
        except (OSError, ValueError, AttributeError):
            ours = False
        if not (overwrite and ours):
            raise SystemExit(f"{folder} exists" + ("; --overwrite replaces it" if ours else
                                                   ", and this script did not make it: choose another --out"))
    summary: dict = {"made_by": MADE_BY, "set": name, "seed": seed, "dir": folder}
    with atomic_path(folder) as tmp:
        os.makedirs(tmp)
        for index, split in enumerate(("train", "test")):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), index])
            if name in DOWN:
                photos = read_photos(DOWN[name], shared, split)
                items, total = downscaled(photos, rng), len(photos)
            else:
                spec = PASTED[name]
                total = counts[index] if counts[index] is not None else spec.images[index]
                items = pasted(spec, shared, split, total, rng)
            summary[split] = write_split(tmp, split, items, total, f"{name} {split}")
        write_json(os.path.join(tmp, "summary.json"), summary)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the sets (each in OUT/NAME)")
    parser.add_argument("--set", action="append", choices=SETS, help="a set to make (repeatable; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--train", type=int, help="photos in a pasted set's train split (default 700 / 200)")
    parser.add_argument("--test", type=int, help="photos in a pasted set's test split (default 150 / 50)")
    parser.add_argument("--overwrite", action="store_true", help="replace sets this script made before")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)  # this checkout's detkit
    summaries = [make_set(name, args.out, os.path.abspath(args.shared), args.seed, args.overwrite,
                          (args.train, args.test)) for name in (args.set or SETS)]
    print(json.dumps(summaries))


if __name__ == "__main__":
    main()
