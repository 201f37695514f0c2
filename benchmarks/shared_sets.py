"""Where each shared dataset's splits are and how `detkit dataset transform` reads them (for the benchmarks)."""
from __future__ import annotations

import os

DATASETS = ("raccoon", "bccd", "cards")


def shared_layout(name: str, shared: str) -> tuple[str, list[tuple[dict, list[str]]], str]:
    """(annotation format, [(reader source, splits)], training split) of a shared dataset; a source is
    {"data_dir": ...} or {"annotations": ..., "images_dir": ...}, as `detkit dataset transform` takes them."""
    root = os.path.join(shared, name)
    if name == "raccoon":  # CSV per split, one images/ folder
        return "csv", [({"annotations": os.path.join(root, "data", f"{s}_labels.csv"),
                         "images_dir": os.path.join(root, "images")}, [s]) for s in ("train", "test")], "train"
    if name == "bccd":  # VOCdevkit with ImageSets/Main: train on trainval (train + val), test on test
        return "voc", [({"data_dir": root}, ["trainval", "test"])], "trainval"
    if name == "cards":  # labelImg: each photo's XML beside it, one folder per split
        return "voc", [({"data_dir": os.path.join(root, s)}, [s]) for s in ("train", "test")], "train"
    raise SystemExit(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} or small:SET")
