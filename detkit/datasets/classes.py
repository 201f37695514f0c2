"""The class map: `classes.json` is the ordered list of names, label i+1 = classes[i], 0 = background."""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence

from detkit.errors import DatasetError
from detkit.utils.atomic import write_json

CLASSES_FILE = "classes.json"


def sorted_classes(names: Iterable[str]) -> list[str]:
    """The class map of a set of names: sorted, so every format and run gives the same labels."""
    return sorted(set(names))


def label_map(classes: Sequence[str]) -> dict[str, int]:
    """Name -> 1-based label."""
    return {name: i + 1 for i, name in enumerate(classes)}


def classes_path(directory: str) -> str:
    """Where a dataset directory keeps its class map."""
    return os.path.join(directory, CLASSES_FILE)


def read_classes(directory: str) -> list[str]:
    """The class names of a dataset directory, validated."""
    path = classes_path(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DatasetError(f"{directory} is a file, not a `detkit dataset transform` output directory")
    try:
        with open(path, encoding="utf-8") as fh:
            names = json.load(fh)
    except FileNotFoundError:
        raise DatasetError(f"{path} not found: not a `detkit dataset transform` output directory") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path}: expected a JSON list of non-empty class names")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: duplicate class names")
    return names


def write_classes(path: str, classes: Sequence[str]) -> None:
    """Atomically write a class map file."""
    write_json(path, list(classes))


def reconcile(new: Sequence[str], existing: Optional[Sequence[str]], kept_splits: Sequence[str],
              out_dir: str) -> list[str]:
    """The class map to write when splits `kept_splits` of `out_dir` stay as they are.

    Their records hold labels of the existing map, so it is kept if it covers the new names;
    a map that would relabel them is refused.
    """
    if not kept_splits or existing is None:
        return list(new)
    missing = [n for n in new if n not in existing]
    if missing:
        raise DatasetError(
            f"{classes_path(out_dir)} lists {list(existing)} for split(s) {', '.join(kept_splits)} already there, "
            f"but the new data also has {missing}; convert all splits in one run or use another --output-dir"
        )
    return list(existing)
