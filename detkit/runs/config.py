"""A run's config and class map, read the one way: package defaults, then the run's config.yml, then overrides."""
from __future__ import annotations

import json
from typing import Iterable

import yaml

from detkit.config import Config, load_config
from detkit.errors import CheckpointError
from detkit.runs import layout


def load_run_config(run_dir: str, overrides: Iterable[str] = ()) -> Config:
    """The config a run was trained with, plus `key=value` overrides."""
    path = layout.config_path(run_dir)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read run config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise CheckpointError(f"{path}{where}: cannot read run config ({problem}); restore the config.yml the "
                              "run was trained with") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: cannot read run config (expected a mapping of sections); restore the "
                              "config.yml the run was trained with")
    return load_config((), overrides, under=data)


def load_class_names(run_dir: str) -> list[str]:
    """The class map saved with a run."""
    path = layout.classes_path(run_dir)
    try:
        with open(path, encoding="utf-8") as fh:
            names = json.load(fh)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read class map ({exc.strerror or exc}); restore the classes.json "
                              "the run was trained with") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot read class map ({str(exc).splitlines()[0]}); restore the "
                              "classes.json the run was trained with") from None
    if not isinstance(names, list) or not names:
        raise CheckpointError(f"{path}: expected a non-empty list of class names")
    return names
