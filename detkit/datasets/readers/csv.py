"""CSV, one row per box: `filename,width,height,class,xmin,ymin,xmax,ymax` or Luminoth's `image_id,...,label`."""
from __future__ import annotations

import csv
import io
import os
from typing import Iterator, Optional

from detkit.datasets.example import Example, Problem, ReaderItem
from detkit.datasets.readers.common import (BadValue, ImageFinder, Source, annotations_layout, parse_number,
                                            parse_size, read_text)
from detkit.errors import DatasetError

# Header names accepted for each field, lower-cased; the first column that matches wins.
COLUMNS = {
    "filename": ("filename", "file_name", "image_id", "image", "image_name", "file", "path"),
    "class": ("class", "label", "class_name", "name", "category"),
    "xmin": ("xmin", "x_min", "x1"),
    "ymin": ("ymin", "y_min", "y1"),
    "xmax": ("xmax", "x_max", "x2"),
    "ymax": ("ymax", "y_max", "y2"),
    "width": ("width",),
    "height": ("height",),
}
REQUIRED = ("filename", "class", "xmin", "ymin", "xmax", "ymax")
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def read(source: Source, split: str) -> Iterator[ReaderItem]:
    """Yield one example per image, in order of first appearance; a row with no class and box is a negative."""
    csv_path, images_dir = _layout(source, split)
    images: dict[str, _Image] = {}
    for line_no, row, error in _rows(csv_path):
        name = row.get("filename", "").strip()
        where = f"{csv_path} line {line_no}"
        if not name:
            yield Problem(where, error or "empty filename")
            continue
        image = images.setdefault(name, _Image(where))
        if image.problem:
            continue
        try:
            if error:
                raise BadValue(error)
            image.add_row(row)
        except BadValue as exc:
            # The image's other rows would give it incomplete labels: skip the whole image.
            image.problem = Problem(where, str(exc))
            yield image.problem
    finder = ImageFinder(images_dir)
    for name, image in images.items():
        if image.problem is None:
            yield image.example(name, finder)


class _Image:
    """The rows of one image collected so far."""

    def __init__(self, first_row: str):
        """Start with no box; `first_row` locates the image in messages."""
        self.source = first_row
        self.boxes: list[tuple[float, float, float, float]] = []
        self.classes: list[str] = []
        self.width = 0
        self.height = 0
        self.problem: Optional[Problem] = None

    def add_row(self, row: dict[str, str]) -> None:
        """Add a row's box, or nothing for a negative row; BadValue for a malformed row."""
        self.width = self.width or parse_size(row.get("width"), "column 'width'")
        self.height = self.height or parse_size(row.get("height"), "column 'height'")
        name = row.get("class", "").strip()
        values = [row.get(k, "").strip() for k in BOX_FIELDS]
        if not name and not any(values):
            return
        if not name:
            raise BadValue("empty class")
        self.boxes.append(tuple(parse_number(v, f"column '{k}'") for k, v in zip(BOX_FIELDS, values)))
        self.classes.append(name)

    def example(self, name: str, finder: ImageFinder) -> ReaderItem:
        """The Example, or a Problem if the image file is missing."""
        image_path = finder.find(name)
        if image_path is None:
            return Problem(self.source, f"image {os.path.join(finder.images_dir, name)} not found")
        rel = finder.relative(image_path)
        n = len(self.boxes)
        return Example(
            filename=rel, image_path=image_path, source=self.source, source_id=rel, width=self.width,
            height=self.height, boxes=tuple(self.boxes), classes=tuple(self.classes),
            difficult=(False,) * n, is_crowd=(False,) * n,
        )


def _layout(source: Source, split: str) -> tuple[str, str]:
    """(CSV file, images dir)."""
    return annotations_layout(source, "csv", "a CSV file", f"{split}.csv", split)


def _rows(path: str) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line number, {field: value}, error or "") per data row; fields named as in COLUMNS."""
    # newline="" keeps \r\n for the csv module, which handles it and quoted newlines itself.
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: empty file, expected a header row")
        columns = _columns(header, path)
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            values = {field: row[i] for field, i in columns.items() if i < len(row)}
            error = "" if len(row) == len(header) else f"expected {len(header)} fields, got {len(row)}"
            yield reader.line_num, values, error
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None


def _columns(header: list[str], path: str) -> dict[str, int]:
    """Field -> column index from the header; a DatasetError listing what is missing."""
    names = [h.strip().lower() for h in header]
    columns: dict[str, int] = {}
    for field, aliases in COLUMNS.items():
        for alias in aliases:
            if alias in names:
                columns[field] = names.index(alias)
                break
    missing = [f for f in REQUIRED if f not in columns]
    if missing:
        raise DatasetError(
            f"{path} line 1: header {','.join(h.strip() for h in header)!r} has no column for {', '.join(missing)}; "
            "expected filename,width,height,class,xmin,ymin,xmax,ymax or image_id,xmin,ymin,xmax,ymax,label"
        )
    return columns
