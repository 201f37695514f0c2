"""Pascal VOC XML: the VOCdevkit layout with split files, or the flat layouts of labelling tools.

Flat layouts: annotations/ + images/, or each XML beside its image in one folder (labelImg's default).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Iterator, Optional

from detkit.datasets.example import Example, Problem, ReaderItem
from detkit.datasets.readers.common import (BadValue, ImageFinder, Source, parse_flag, parse_number, parse_size,
                                            require_dir)
from detkit.errors import DatasetError


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield the examples of `split`: the split file's ids (VOCdevkit) or every XML file (flat)."""
    ann_dir, images_dir, split_file = _layout(source, split)
    finder = ImageFinder(images_dir)
    if split_file is None:
        names = sorted(n for n in os.listdir(ann_dir) if n.lower().endswith(".xml"))
        if not names:
            raise DatasetError(f"annotations directory {ann_dir}: no .xml files")
        for name in names:
            yield read_xml(os.path.join(ann_dir, name), finder)
        return
    for line_no, image_id in _split_ids(split_file):
        xml_path = os.path.join(ann_dir, image_id + ".xml")
        if not os.path.isfile(xml_path):
            yield Problem(f"{split_file} line {line_no}", f"annotation {xml_path} not found")
            continue
        yield read_xml(xml_path, finder, listed_in=f"{split_file} line {line_no}")


def _layout(source: Source, split: str) -> tuple[str, str, Optional[str]]:
    """(annotations dir, images dir, split file or None) for the VOCdevkit or the flat layout."""
    if source.explicit:
        if not source.annotations or not source.images_dir:
            raise DatasetError("voc: give --data-dir, or both --annotations (a directory of .xml files) "
                               "and --images-dir")
        ann_dir = require_dir(source.annotations, "annotations directory")
        return ann_dir, require_dir(source.images_dir, "images directory"), None
    data_dir = require_dir(source.data_dir or "", "data directory")
    devkit = os.path.join(data_dir, "Annotations")
    if os.path.isdir(devkit):
        split_file = os.path.join(data_dir, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise DatasetError(f"split file {split_file} not found ({_available_splits(data_dir)})")
        return devkit, require_dir(os.path.join(data_dir, "JPEGImages"), "images directory"), split_file
    flat = os.path.join(data_dir, "annotations")
    if os.path.isdir(flat):
        return flat, require_dir(os.path.join(data_dir, "images"), "images directory"), None
    if any(n.lower().endswith(".xml") for n in os.listdir(data_dir)):
        return data_dir, data_dir, None
    raise DatasetError(
        f"data directory {data_dir}: expected VOCdevkit Annotations/ + JPEGImages/ + ImageSets/Main/, "
        "annotations/ + images/, or .xml files beside their images"
    )


def _available_splits(data_dir: str) -> str:
    """'splits available: a, b' from ImageSets/Main, for the error message."""
    main = os.path.join(data_dir, "ImageSets", "Main")
    # Per-class files (ImageSets/Main/cat_train.txt) are not splits.
    files = os.listdir(main) if os.path.isdir(main) else []
    names = sorted(n[:-4] for n in files if n.endswith(".txt") and "_" not in n)
    return f"splits available: {', '.join(names)}" if names else "no split files in ImageSets/Main"


def _split_ids(split_file: str) -> Iterator[tuple[int, str]]:
    """(line number, image id) of each non-blank line; per-class files add a flag column, ignored."""
    try:
        with open(split_file, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {split_file}: cannot read: {exc}") from None
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if fields:
            yield line_no, fields[0]


def read_xml(xml_path: str, finder: ImageFinder, listed_in: str = "") -> ReaderItem:
    """One VOC annotation file as an Example, or a Problem naming the file and line or element."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        return Problem(f"{xml_path} line {line}, column {col + 1}", f"malformed XML ({_parse_reason(exc)})")
    except OSError as exc:
        return Problem(xml_path, f"cannot read: {exc.strerror or exc}")
    try:
        return _example(root, xml_path, finder, listed_in)
    except BadValue as exc:
        return Problem(xml_path, str(exc))


def _parse_reason(exc: ET.ParseError) -> str:
    """expat's message without the ': line X, column Y' that the location already gives."""
    return str(exc).split(":")[0]


def _example(root: ET.Element, xml_path: str, finder: ImageFinder, listed_in: str) -> ReaderItem:
    """Build the Example from a parsed <annotation>."""
    if root.tag != "annotation":
        raise BadValue(f"root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip()
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    image_path = finder.find(filename or stem, fallback_stem=stem)
    if image_path is None:
        where = f"{listed_in}: " if listed_in else ""
        return Problem(xml_path, f"{where}image {os.path.join(finder.images_dir, filename or stem)} not found")
    width = parse_size(root.findtext("size/width"), "<size><width>")
    height = parse_size(root.findtext("size/height"), "<size><height>")
    boxes, classes, difficult = [], [], []
    for i, obj in enumerate(root.findall("object"), start=1):
        where = f"<object> #{i}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise BadValue(f"{where}: missing or empty <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BadValue(f"{where} ({name}): missing <bndbox>")
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(key)
            if text is None:
                raise BadValue(f"{where} ({name}): missing <bndbox><{key}>")
            coords.append(parse_number(text, f"{where} ({name}) <bndbox><{key}>"))
        boxes.append(tuple(coords))
        classes.append(name)
        difficult.append(parse_flag(obj.findtext("difficult"), f"{where} ({name}) <difficult>"))
    rel = finder.relative(image_path)
    return Example(
        filename=rel, image_path=image_path, source=xml_path, source_id=rel, width=width, height=height,
        boxes=tuple(boxes), classes=tuple(classes), difficult=tuple(difficult), is_crowd=(False,) * len(boxes),
    )
