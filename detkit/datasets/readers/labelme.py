"""LabelMe JSON: one file per image with `shapes`, `imagePath` (relative to the JSON) and optionally `imageData`.

Layouts: DIR/<split>/*.json, or every JSON of DIR in the one split named, or --annotations (a folder of JSON
files) with --images-dir (where images not found beside their JSON are looked up by name). Rectangles are boxes;
a polygon becomes its bounding box; other shapes (circle, line, point, ...) are skipped; each is counted in the
summary. LabelMe shows photos upright (EXIF applied), so when the file's imageWidth/imageHeight are the upright
size of an EXIF-rotated photo the boxes are moved into the stored pixels detkit trains on.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any, Iterator, Optional

from detkit.datasets.example import Example, PixelBox, Problem, ReaderItem
from detkit.datasets.orientation import SWAPS_AXES, box_to_stored, read_orientation
from detkit.datasets.readers.common import (BadValue, ImageFinder, Source, parse_number, parse_size, read_text,
                                            require_dir)
from detkit.errors import DatasetError

EMBEDDED = "#imageData"  # image_path suffix of an image read from the JSON's imageData


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield one example per JSON file of the split, sorted by name."""
    json_dir, images_dir = layout(source, split)
    names = sorted(n for n in os.listdir(json_dir) if n.lower().endswith(".json"))
    if not names:
        raise DatasetError(f"annotations directory {json_dir}: no .json files")
    finder = ImageFinder(images_dir)
    for name in names:
        yield read_json(os.path.join(json_dir, name), finder)


def layout(source: Source, split: str) -> tuple[str, str]:
    """(folder of JSON files, folder where images not beside their JSON are looked for)."""
    if source.explicit:
        if not source.annotations or not source.images_dir:
            raise DatasetError("labelme: give --data-dir, or both --annotations (a folder of LabelMe .json files) "
                               "and --images-dir")
        return (require_dir(source.annotations, "annotations directory"),
                require_dir(source.images_dir, "images directory"))
    data_dir = require_dir(source.data_dir or "", "data directory")
    split_dir = os.path.join(data_dir, split)
    if os.path.isdir(split_dir):
        return split_dir, split_dir
    if is_flat(data_dir):
        return data_dir, data_dir
    raise DatasetError(f"data directory {data_dir}: expected {split}/ with LabelMe .json files, or .json files "
                       "directly inside it")


def is_flat(data_dir: str) -> bool:
    """Whether a --data-dir holds the JSON files itself (one split) rather than one folder per split."""
    return os.path.isdir(data_dir) and any(n.lower().endswith(".json") for n in os.listdir(data_dir))


def read_json(path: str, finder: ImageFinder) -> ReaderItem:
    """One LabelMe file as an Example, or a Problem naming the file and the shape."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        return Problem(f"{path} line {exc.lineno}, column {exc.colno}", f"invalid JSON ({exc.msg})")
    except DatasetError as exc:
        return Problem(path, str(exc).split(": ", 1)[-1])
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return Problem(path, "not a LabelMe file (no 'shapes' list)")
    try:
        return _example(data, path, finder)
    except BadValue as exc:
        return Problem(path, str(exc))


def shape_box(shape: Any, i: int) -> tuple[str, Optional[PixelBox], str]:
    """(label, pixel box or None when the shape is skipped, shape type) of shapes[i]."""
    where = f"shapes[{i}]"
    if not isinstance(shape, dict):
        raise BadValue(f"{where}: expected an object")
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        raise BadValue(f"{where}: missing or empty 'label'")
    kind = shape.get("shape_type") or "polygon"  # LabelMe before 3.0 wrote polygons without a type
    if kind not in ("rectangle", "polygon"):
        return label.strip(), None, str(kind)
    points = shape.get("points")
    needed = 2 if kind == "rectangle" else 3
    if not isinstance(points, list) or len(points) < needed or not all(
            isinstance(p, list) and len(p) == 2 for p in points):
        raise BadValue(f"{where} ({label.strip()}): a {kind} needs at least {needed} [x, y] points, got {points!r}")
    xs = [parse_number(p[0], f"{where} ({label.strip()}) x") for p in points]
    ys = [parse_number(p[1], f"{where} ({label.strip()}) y") for p in points]
    return label.strip(), (min(xs), min(ys), max(xs), max(ys)), kind


def _example(data: dict, path: str, finder: ImageFinder) -> ReaderItem:
    """Build the Example of a parsed LabelMe file."""
    declared = (parse_size(data.get("imageWidth"), "imageWidth"), parse_size(data.get("imageHeight"), "imageHeight"))
    boxes, classes, notes = [], [], []
    for i, shape in enumerate(data["shapes"]):
        label, box, kind = shape_box(shape, i)
        if box is None:
            notes.append(f"{kind} shape skipped")
            continue
        if kind == "polygon":
            notes.append("polygon as its bounding box")
        boxes.append(box)
        classes.append(label)
    found = _image(data, path, finder)
    if isinstance(found, Problem):
        return found
    image_path, filename, image_bytes = found
    try:
        width, height, orientation = read_orientation(io.BytesIO(image_bytes) if image_bytes else image_path)
    except Exception:  # an unreadable image is reported (and skipped) when it is loaded
        width = height = orientation = 0
    if orientation not in (0, 1) and boxes and _drawn_upright(declared, width, height, orientation):
        boxes = [box_to_stored(b, orientation, width, height) for b in boxes]
        notes.append(f"boxes moved from the upright photo to the stored pixels (EXIF orientation {orientation})")
        declared = (width, height)
    n = len(boxes)
    return Example(
        filename=filename, image_path=image_path, source=path, source_id=filename, width=declared[0],
        height=declared[1], boxes=tuple(boxes), classes=tuple(classes), difficult=(False,) * n,
        is_crowd=(False,) * n, image_bytes=image_bytes, notes=tuple(notes),
    )


def _drawn_upright(declared: tuple[int, int], width: int, height: int, orientation: int) -> bool:
    """Whether the shapes are in the upright photo: LabelMe's way, unless the size it wrote is the stored one."""
    if orientation in SWAPS_AXES and width != height and declared == (width, height):
        return False  # written by a LabelMe that did not apply EXIF
    return True


def _image(data: dict, path: str, finder: ImageFinder) -> tuple[str, str, Optional[bytes]] | Problem:
    """(image path, image/filename, embedded bytes or None): imagePath beside the JSON, in --images-dir, or imageData."""
    image_path = data.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        return Problem(path, f"'imagePath' must be a string, got {image_path!r}")
    image_path = (image_path or "").replace("\\", "/")  # LabelMe on Windows writes backslashes
    here = os.path.dirname(path)
    if image_path:
        beside = os.path.normpath(os.path.join(here, image_path))
        if os.path.isfile(beside):
            return beside, _name(beside, finder, here), None
        found = finder.find(os.path.basename(image_path))
        if found is not None:
            return found, finder.relative(found), None
    embedded = data.get("imageData")
    if isinstance(embedded, str) and embedded:
        try:
            raw = base64.b64decode(embedded, validate=True)
        except (binascii.Error, ValueError):
            return Problem(path, "'imageData' is not valid base64")
        stem = os.path.splitext(os.path.basename(image_path or path))[0]
        ext = ".png" if raw.startswith(b"\x89PNG") else ".jpg"
        return path + EMBEDDED, stem + ext, raw
    if not image_path:
        return Problem(path, "no 'imagePath' and no 'imageData'")
    return Problem(path, f"image {os.path.join(here, image_path)} not found (nor in {finder.images_dir}), "
                         "and no 'imageData'")


def _name(image: str, finder: ImageFinder, json_dir: str) -> str:
    """image/filename: relative to the images folder, else to the JSON's folder, else the base name."""
    for base in (finder.images_dir, json_dir):
        rel = os.path.relpath(image, base)
        if not rel.startswith(".."):
            return rel
    return os.path.basename(image)
