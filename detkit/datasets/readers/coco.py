"""COCO instances JSON: `DIR/annotations/instances_<split>.json` + `DIR/<split>/`, or explicit paths."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from detkit.datasets.example import Example, Problem, ReaderItem
from detkit.datasets.readers.common import (BadValue, ImageFinder, Source, annotations_layout, parse_flag,
                                            parse_number, parse_size, read_text)
from detkit.errors import DatasetError


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield one example per entry of "images", in file order; images without annotations are negatives."""
    json_path, images_dir = _layout(source, split)
    data = _load_json(json_path)
    categories = _categories(data, json_path)
    images = _list(data, "images", json_path)
    ids: dict[Any, int] = {}
    bad_images: set[Any] = set()
    for i, image in enumerate(images):
        image_id = _key(image.get("id")) if isinstance(image, dict) else None
        if image_id is None:
            yield Problem(f"{json_path}: images[{i}]", "missing or invalid 'id'")
            continue
        if image_id in ids:
            yield Problem(f"{json_path}: images[{i}]",
                          f"duplicate image id {image_id!r} (also images[{ids[image_id]}])")
            bad_images.add(image_id)
            continue
        ids[image_id] = i
    per_image: dict[Any, list[tuple[Any, ...]]] = {}
    for j, ann in enumerate(_list(data, "annotations", json_path, required=False)):
        where = f"{json_path}: annotations[{j}]"
        try:
            image_id, box, name, crowd = _annotation(ann, categories, ids)
        except BadValue as exc:
            image_id = _key(ann.get("image_id")) if isinstance(ann, dict) else None
            if image_id in ids and image_id not in bad_images:
                bad_images.add(image_id)  # its labels are incomplete: skip the image, not just the box
                yield Problem(where, f"{exc} (in image id {image_id!r})")
            elif image_id not in ids:
                yield Problem(where, str(exc))
            continue
        per_image.setdefault(image_id, []).append((box, name, crowd))
    finder = ImageFinder(images_dir)
    for image_id, i in ids.items():
        if image_id in bad_images:
            continue
        yield _example(images[i], i, image_id, per_image.get(image_id, []), json_path, finder)


def _key(value: Any) -> Any:
    """An id usable as a dict key (int or str), else None."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _layout(source: Source, split: str) -> tuple[str, str]:
    """(instances JSON, images dir)."""
    return annotations_layout(source, "coco", "an instances JSON file", os.path.join("annotations",
                                                                                    f"instances_{split}.json"), split)


def _load_json(path: str) -> Any:
    """Parsed JSON, or a DatasetError with the line and column of the syntax error."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from None


def _list(data: Any, key: str, path: str, required: bool = True) -> list:
    """data[key] as a list, else a DatasetError naming the key."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    if key not in data and not required:
        return []
    value = data.get(key)
    if not isinstance(value, list):
        raise DatasetError(f"{path}: '{key}' must be a list" if key in data else f"{path}: no '{key}' list")
    return value


def _categories(data: Any, path: str) -> dict[Any, str]:
    """Category id -> name; labels come later from the sorted names, so ids need not be contiguous."""
    categories: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for k, cat in enumerate(_list(data, "categories", path)):
        where = f"{path}: categories[{k}]"
        valid = isinstance(cat, dict) and _key(cat.get("id")) is not None
        if not valid or not isinstance(cat.get("name"), str) or not cat["name"].strip():
            raise DatasetError(f"{where}: expected an object with 'id' and a non-empty 'name'")
        name = cat["name"].strip()
        if cat["id"] in categories:
            raise DatasetError(f"{where}: duplicate category id {cat['id']!r}")
        if name in seen:
            raise DatasetError(f"{where}: category name {name!r} also has id {seen[name]!r}")
        categories[cat["id"]] = name
        seen[name] = cat["id"]
    return categories


def _annotation(ann: Any, categories: dict[Any, str], ids: dict[Any, int]) -> tuple[Any, tuple, str, bool]:
    """(image id, pixel box, class name, iscrowd) of one annotation."""
    if not isinstance(ann, dict):
        raise BadValue("expected an object")
    image_id = _key(ann.get("image_id"))
    if image_id not in ids:
        raise BadValue(f"image_id {image_id!r} is not in 'images'")
    category = _key(ann.get("category_id"))
    if category not in categories:
        raise BadValue(f"category_id {category!r} is not in 'categories'")
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise BadValue(f"bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = (parse_number(v, "bbox") for v in bbox)
    return image_id, (x, y, x + w, y + h), categories[category], parse_flag(ann.get("iscrowd"), "iscrowd")


def _example(image: Any, i: int, image_id: Any, anns: list, json_path: str, finder: ImageFinder) -> ReaderItem:
    """The Example of images[i], or a Problem."""
    where = f"{json_path}: images[{i}]"
    name = image.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return Problem(where, "missing or empty 'file_name'")
    image_path = finder.find(name)
    if image_path is None:
        return Problem(where, f"image {os.path.join(finder.images_dir, name)} not found")
    try:
        width = parse_size(image.get("width"), "width")
        height = parse_size(image.get("height"), "height")
    except BadValue as exc:
        return Problem(where, str(exc))
    rel = finder.relative(image_path)
    return Example(
        filename=rel, image_path=image_path, source=where, source_id=str(image_id), width=width, height=height,
        boxes=tuple(a[0] for a in anns), classes=tuple(a[1] for a in anns),
        difficult=(False,) * len(anns), is_crowd=tuple(a[2] for a in anns),
    )
