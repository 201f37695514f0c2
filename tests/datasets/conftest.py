"""Fixtures for the dataset tests: the shared raccoon set, synthetic images and annotations, CLI runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

@pytest.fixture(scope="session")
def raccoon(raccoon_dir) -> Path:
    """The packaged raccoon photos with VOC XML, CSV and COCO labels of the same boxes (tests/conftest.py)."""
    return Path(raccoon_dir)


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_once() -> None:
    """Import TensorFlow once, quietly, for the whole session."""
    from detkit.utils.tf_quiet import import_tensorflow

    import_tensorflow()


def make_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", fmt: str = "JPEG",
               color: object = None) -> Path:
    """Write a small image with some structure (a gradient) so it is a real photo-like file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    gradient = (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)
    im = Image.fromarray(np.stack([gradient, 255 - gradient, gradient // 2], axis=-1), "RGB")
    if color is not None:
        im = Image.new("RGB", size, color)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, format=fmt)
    return path


def write_voc(path: Path, filename: str, size: tuple[int, int], objects: Sequence[tuple]) -> Path:
    """A VOC XML file; objects are (name, (xmin, ymin, xmax, ymax)) or (name, box, difficult)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<annotation><folder>images</folder><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for obj in objects:
        name, box = obj[0], obj[1]
        difficult = obj[2] if len(obj) > 2 else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                     "</bndbox></object>")
    parts.append("</annotation>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_csv(path: Path, rows: Sequence[Sequence[object]],
              header: str = "filename,width,height,class,xmin,ymin,xmax,ymax", newline: str = "\n",
              bom: bool = False) -> Path:
    """A CSV file with a header row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = newline.join([header] + [",".join(str(v) for v in row) for row in rows]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_coco(path: Path, images: Sequence[dict], annotations: Sequence[dict], categories: Sequence[dict]) -> Path:
    """A COCO instances JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations),
                                "categories": list(categories)}), encoding="utf-8")
    return path


def records(out: Path, split: str) -> list[dict]:
    """The parsed records of a split (numpy values, keys of tfrecord.parse_example), in file order."""
    from detkit.datasets.tfrecord import iter_records

    return list(iter_records(str(out), split, with_images=True))


def summary(out: Path, split: str) -> dict:
    """A split's summary JSON."""
    return json.loads((out / f"{split}-summary.json").read_text())


def classes(out: Path) -> list[str]:
    """classes.json."""
    return json.loads((out / "classes.json").read_text())


@pytest.fixture
def cli() -> Callable[..., object]:
    """Run `detkit ...` in-process; returns the result, or the raised exception if `error` is set."""
    from detkit.cli.main import cli as root

    def run(*args: object, error: Optional[type] = None):
        result = CliRunner().invoke(root, [str(a) for a in args], standalone_mode=False)
        if error is not None:
            assert isinstance(result.exception, error), (result.exception, result.output)
            return result.exception
        assert result.exception is None, (result.exception, result.output)
        return result

    return run


# ---------------------------------------------------------------- converters from VOC XML, written from each
# format's own description (not with detkit's writers), so the readers are tested against independent files.
def _voc_objects(xml_path: Path) -> tuple[str, list[tuple[str, list[float]]]]:
    """(filename, [(class, [xmin, ymin, xmax, ymax])]) of a VOC XML file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(xml_path).getroot()
    objects = [(o.findtext("name").strip(), [float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
               for o in root.findall("object")]
    return root.findtext("filename").strip(), objects


def _find_image(images_dir: Path, filename: str, xml_path: Path) -> Path:
    """The image of an XML: by its <filename>, else by the XML's stem with any extension."""
    if (images_dir / filename).is_file():
        return images_dir / filename
    return next(p for p in sorted(images_dir.iterdir()) if p.stem == xml_path.stem and p.suffix.lower() in (".jpg", ".png"))


def voc_to_yolo(xml_paths: Sequence[Path], images_dir: Path, root: Path, split: str, names: Sequence[str],
                roboflow: bool = False) -> Path:
    """Ultralytics' layout (images/SPLIT + labels/SPLIT) or Roboflow's (SPLIT/images + SPLIT/labels) of VOC files,
    6 decimals per value as Ultralytics writes; returns the folder of the images. data.yaml is written by the caller."""
    folder = root / split / "images" if roboflow else root / "images" / split
    labels = root / split / "labels" if roboflow else root / "labels" / split
    folder.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for xml_path in xml_paths:
        filename, objects = _voc_objects(xml_path)
        image = _find_image(images_dir, filename, xml_path)
        with Image.open(image) as im:
            assert im.getexif().get(0x0112, 1) == 1, "the converter does not rotate boxes"
            w, h = im.size
        (folder / image.name).symlink_to(image)
        lines = [f"{names.index(c)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
                 f"{(b[3] - b[1]) / h:.6f}" for c, b in objects]
        (labels / (image.stem + ".txt")).write_text("".join(line + "\n" for line in lines))
    return folder


def voc_to_labelme(xml_paths: Sequence[Path], images_dir: Path, out_dir: Path) -> Path:
    """One LabelMe JSON per VOC file (rectangles, imagePath relative to the JSON, no imageData) in out_dir."""
    import os

    out_dir.mkdir(parents=True, exist_ok=True)
    for xml_path in xml_paths:
        filename, objects = _voc_objects(xml_path)
        image = _find_image(images_dir, filename, xml_path)
        with Image.open(image) as im:
            w, h = im.size
        shapes = [{"label": c, "points": [[b[0], b[1]], [b[2], b[3]]], "group_id": None, "description": "",
                   "shape_type": "rectangle", "flags": {}} for c, b in objects]
        data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": os.path.relpath(image, out_dir),
                "imageData": None, "imageHeight": h, "imageWidth": w}
        (out_dir / (xml_path.stem + ".json")).write_text(json.dumps(data, indent=2))
    return out_dir


@pytest.fixture
def helpers():
    """The helper functions above, for tests to call."""
    class H:
        pass

    for fn in (make_image, write_voc, write_csv, write_coco, records, summary, classes, voc_to_yolo, voc_to_labelme):
        setattr(H, fn.__name__, staticmethod(fn))
    return H
