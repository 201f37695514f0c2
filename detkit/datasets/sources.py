"""Check the datasets a training config points at before anything is built or written."""
from __future__ import annotations

import json
import os
from typing import Optional

from detkit.config.schema import DatasetConfig
from detkit.datasets.classes import read_classes
from detkit.datasets.tfrecord import find_shards
from detkit.errors import ConfigError, DatasetError


def parse_source(text: str) -> tuple[str, str]:
    """"DIR:SPLIT" -> (DIR, SPLIT); the split is after the last colon so DIR may hold colons."""
    directory, sep, split = text.rpartition(":")
    if not sep or not directory.strip() or not split.strip():
        raise ValueError(text)
    return directory, split


def split_boxes(directory: str, split: str) -> Optional[int]:
    """The box count in a split's summary, or None when the summary does not say."""
    try:
        with open(os.path.join(directory, f"{split}-summary.json"), encoding="utf-8") as fh:
            boxes = json.load(fh).get("boxes")
    except (OSError, ValueError, AttributeError):
        return None
    return boxes if isinstance(boxes, int) else None


def check_training_sources(cfg: DatasetConfig) -> list[str]:
    """The class names of dataset.dir, after checking it and every extra source is complete and agrees."""
    if not cfg.dir:
        raise ConfigError("config key dataset.dir: required for training (a `detkit dataset transform` output)")
    names = read_classes(cfg.dir)
    if not names:
        raise DatasetError(f"{os.path.join(cfg.dir, 'classes.json')} lists no classes")
    find_shards(cfg.dir, cfg.split)
    boxes = [split_boxes(cfg.dir, cfg.split)]
    for i, text in enumerate(cfg.extra_sources):
        key = f"config key dataset.extra_sources[{i}]"
        directory, split = parse_source(text)
        try:
            other = read_classes(directory)
            find_shards(directory, split)
        except DatasetError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if other != names:
            # Labels are indices into each directory's own class map: mixing two maps teaches wrong classes.
            raise ConfigError(
                f"{key}: {os.path.join(directory, 'classes.json')} lists {other}, but dataset.dir {cfg.dir} lists "
                f"{names}; labels would be mixed up (re-run `detkit dataset transform` or `detkit dataset merge` "
                "so both share one class map)")
        boxes.append(split_boxes(directory, split))
    if all(b == 0 for b in boxes):
        where = " and extra_sources" if cfg.extra_sources else ""
        raise DatasetError(
            f"{cfg.dir}: split {cfg.split!r}{where} has no boxes (every image is a negative): there is nothing "
            "to learn; check the annotations, or the summary's dropped_box_details and skipped lists")
    return names
