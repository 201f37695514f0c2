"""Ultralytics YOLO: a data.yaml naming the classes and each split's images, one `class cx cy w h` line per box.

    data.yaml               names: [a, b] or {0: a, 1: b}; path: root (optional); train/val/test: a folder, a
                            .txt list of images, or a list of them, relative to `path` (else to the yaml)
    images/train/x.jpg      labels/train/x.txt: one line per box, normalised to [0, 1] of the upright photo
    train/images/x.jpg      Roboflow's export: train/labels/x.txt, `train: ../train/images` in data.yaml

The label file of an image is its path with the last `images` folder replaced by `labels` and the extension by
.txt (Ultralytics' rule; with no `images` folder, the .txt beside the image). An image without one is a negative.
Coordinates are fractions of the photo as shown upright (Ultralytics applies EXIF orientation), so boxes are
moved into the stored pixels detkit trains on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import yaml

from detkit.datasets.example import Example, PixelBox, Problem, ReaderItem
from detkit.datasets.orientation import box_to_stored, read_orientation, upright_size
from detkit.datasets.readers.common import BadValue, Source, parse_number, read_text, require_dir, require_file
from detkit.errors import DatasetError

# Ultralytics' IMG_FORMATS: listed so that formats detkit cannot store are reported as skipped, not ignored.
IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


@dataclass(frozen=True)
class Layout:
    """Where one split's images are and what its class indices mean."""

    names: list[str]
    images: list[tuple[str, str]]  # (image path, where it was listed: a folder or "list.txt line N")
    root: str  # image names are relative to this folder


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield one example per image of the split, in listing order (folders sorted)."""
    layout = _layout(source, split)
    for image_path, listed_in in layout.images:
        yield read_image_labels(image_path, layout.names, layout.root, listed_in)


def label_path(image_path: str) -> str:
    """The label file of an image: the last `images` folder becomes `labels`, the extension `.txt`."""
    parts = image_path.split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def yolo_to_pixels(cx: float, cy: float, w: float, h: float, width: int, height: int) -> PixelBox:
    """A normalised (centre x, centre y, width, height) box in pixels of a `width` x `height` image."""
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    return tuple(_snap(v, size) for v, size in zip(box, (width, height, width, height)))  # type: ignore[return-value]


def _snap(value: float, size: int) -> float:
    """A coordinate within float noise of the image edge (a box from 0 to 1 written as centre and size) on it."""
    for edge in (0.0, float(size)):
        if abs(value - edge) <= 1e-6 * max(size, 1):
            return edge
    return value


def find_yaml(path: str) -> str:
    """The data.yaml of a --data-dir (or the path itself if it is a .yaml file)."""
    if os.path.isfile(path) and path.lower().endswith((".yaml", ".yml")):
        return path
    require_dir(path, "data directory")
    for name in YAML_NAMES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    found = sorted(n for n in os.listdir(path) if n.lower().endswith((".yaml", ".yml")))
    if len(found) == 1:
        return os.path.join(path, found[0])
    listed = f" (found {', '.join(found)}: give one as --data-dir)" if found else ""
    raise DatasetError(f"data directory {path}: no data.yaml{listed}")


def load_yaml(path: str) -> dict:
    """data.yaml as a mapping; a DatasetError names the line of a syntax error."""
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DatasetError(f"{path}{where}: invalid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'names' and 'train'/'val'/'test' keys")
    return data


def class_names(data: dict, path: str) -> list[str]:
    """The class names by index from `names` (a list or an {index: name} mapping), checked against `nc`."""
    names: Any = data.get("names")
    nc = data.get("nc")
    if names is None and isinstance(nc, int) and not isinstance(nc, bool):
        return [f"class_{i}" for i in range(nc)]  # Ultralytics' names when only nc is given
    if isinstance(names, dict):
        try:
            indexed = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: key 'names': keys must be class indices 0, 1, ...") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise DatasetError(f"{path}: key 'names': indices must be 0 to {len(indexed) - 1}, got {sorted(indexed)}")
        names = [indexed[i] for i in range(len(indexed))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: key 'names': expected a list of class names or an {{index: name}} mapping")
    out = []
    for i, name in enumerate(names):
        if name is None or isinstance(name, (dict, list)) or not str(name).strip():
            raise DatasetError(f"{path}: key 'names': class {i} has no name")
        out.append(str(name).strip())
    if nc is not None and nc != len(out):
        raise DatasetError(f"{path}: key 'nc' is {nc!r} but 'names' lists {len(out)} classes")
    return out


def _layout(source: Source, split: str) -> Layout:
    """The split's images and class names from data.yaml, or from --annotations and --images-dir."""
    if source.explicit:
        if not source.annotations or not source.images_dir:
            raise DatasetError("yolo: give --data-dir (a folder with data.yaml), or --annotations (data.yaml or a "
                               "classes.txt with one name per line) and --images-dir (the split's images)")
        names_file = require_file(source.annotations, "annotations file")
        if names_file.lower().endswith((".yaml", ".yml")):
            names = class_names(load_yaml(names_file), names_file)
        else:
            names = _names_file(names_file)
        images_dir = require_dir(source.images_dir, "images directory")
        return Layout(names, _list_folder(images_dir), images_dir)
    yaml_path = find_yaml(source.data_dir or "")
    data = load_yaml(yaml_path)
    names = class_names(data, yaml_path)
    root = _root(data, yaml_path)
    value = data.get(split)
    if not value:
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise DatasetError(f"{yaml_path}: no '{split}' key (splits listed: {', '.join(keys) or 'none'})")
    entries = value if isinstance(value, list) else [value]
    images: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise DatasetError(f"{yaml_path}: key '{split}': expected a path or a list of paths, got {entry!r}")
        path = _resolve(root, entry)
        if path is None:
            raise DatasetError(f"{yaml_path}: key '{split}': {os.path.join(root, entry)} not found")
        images += _list_folder(path) if os.path.isdir(path) else _list_file(path, root)
    folders = [p for p in (_resolve(root, e) for e in entries) if p and os.path.isdir(p)]
    return Layout(names, images, folders[0] if len(folders) == 1 and len(entries) == 1 else root)


def _root(data: dict, yaml_path: str) -> str:
    """The dataset root: `path` (relative to the yaml's folder, then to the working directory), else the yaml's folder."""
    here = os.path.dirname(os.path.abspath(yaml_path))
    given = data.get("path")
    if not given:
        return here
    if not isinstance(given, str):
        raise DatasetError(f"{yaml_path}: key 'path': expected a folder, got {given!r}")
    for candidate in (os.path.join(here, given), os.path.abspath(given)):
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    raise DatasetError(f"{yaml_path}: key 'path': folder {given} not found (relative to {here})")


def _resolve(root: str, entry: str) -> Optional[str]:
    """An entry of train/val/test under the root; Roboflow's `../train/images` also read as `train/images`."""
    path = os.path.normpath(os.path.join(root, entry))
    if not os.path.exists(path) and entry.startswith("../"):
        path = os.path.normpath(os.path.join(root, entry[3:]))
    return path if os.path.exists(path) else None


def _list_folder(folder: str) -> list[tuple[str, str]]:
    """Every image under a folder, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append((os.path.join(dirpath, name), folder))
    if not found:
        raise DatasetError(f"images directory {folder}: no images")
    return found


def _list_file(path: str, root: str) -> list[tuple[str, str]]:
    """The images of a .txt list: `./x` relative to the list's folder, other relative paths to the root."""
    here = os.path.dirname(os.path.abspath(path))
    found = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name.startswith("./"):
            image = os.path.join(here, name[2:])
        elif os.path.isabs(name):
            image = name
        else:
            candidates = [os.path.join(root, name), os.path.join(here, name)]
            image = next((c for c in candidates if os.path.isfile(c)), candidates[0])
        found.append((os.path.normpath(image), f"{path} line {line_no}"))
    if not found:
        raise DatasetError(f"{path}: lists no images")
    return found


def _names_file(path: str) -> list[str]:
    """Class names, one per line (classes.txt, obj.names)."""
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: no class names (expected one per line)")
    return names


def read_image_labels(image_path: str, names: list[str], root: str, listed_in: str) -> ReaderItem:
    """The Example of one image and its label file, or a Problem naming the file and line."""
    if not os.path.isfile(image_path):
        return Problem(listed_in if " line " in listed_in else image_path, f"image {image_path} not found")
    labels = label_path(image_path)
    notes: list[str] = []
    rows: list[tuple[int, list[float], int]] = []
    if os.path.isfile(labels):
        try:
            rows = _label_rows(labels, len(names), notes)
        except _LineError as exc:
            return Problem(f"{labels} line {exc.line}", str(exc))
        except DatasetError as exc:  # not UTF-8: the message names the file and line
            return Problem(labels, str(exc).split(" ", 1)[-1])
    else:
        notes.append("no label file (a negative)")
    try:
        width, height, orientation = read_orientation(image_path)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken headers
        return Problem(image_path, f"cannot read the image size ({exc}); YOLO boxes are fractions of it")
    up_w, up_h = upright_size(width, height, orientation)
    boxes = []
    for _, (cx, cy, w, h), _ in rows:
        box = yolo_to_pixels(cx, cy, w, h, up_w, up_h)
        boxes.append(box if orientation == 1 else box_to_stored(box, orientation, width, height))
    if orientation != 1 and rows:
        notes.append(f"boxes moved from the upright photo to the stored pixels (EXIF orientation {orientation})")
    rel = os.path.relpath(image_path, root)
    rel = os.path.basename(image_path) if rel.startswith("..") else rel
    n = len(rows)
    return Example(
        filename=rel, image_path=image_path, source=labels if os.path.isfile(labels) else image_path, source_id=rel,
        boxes=tuple(boxes), classes=tuple(names[c] for c, _, _ in rows), difficult=(False,) * n,
        is_crowd=(False,) * n, notes=tuple(notes),
    )


class _LineError(ValueError):
    """A malformed line of a label file."""

    def __init__(self, line: int, message: str):
        """`message` says what is wrong with line `line`."""
        super().__init__(message)
        self.line = line


def _label_rows(path: str, num_classes: int, notes: list[str]) -> list[tuple[int, list[float], int]]:
    """(class index, [cx, cy, w, h], line number) per line of a label file; segments become their bounding box."""
    rows = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise _LineError(line_no, f"expected 'class x_center y_center width height' (5 numbers) or a segment "
                                      f"'class x1 y1 x2 y2 ...', got {len(fields)} fields")
        try:
            index = parse_number(fields[0], "class")
            values = [parse_number(v, "coordinate") for v in fields[1:]]
        except BadValue as exc:
            raise _LineError(line_no, str(exc)) from None
        if index != int(index) or not 0 <= index < num_classes:
            raise _LineError(line_no, f"class {fields[0]} is not an index of the {num_classes} names "
                                      f"(0 to {num_classes - 1})")
        if len(values) > 4:
            xs, ys = values[0::2], values[1::2]
            values = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
            notes.append("segment as its bounding box")
        rows.append((int(index), values, line_no))
    return rows
