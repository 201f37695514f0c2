"""Build the validated Config: package defaults, then user files, then -o overrides."""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from importlib import resources
from typing import Any, Iterable, Literal, Optional, Union

import yaml

from detkit.config.checks import check_values
from detkit.config.schema import Config
from detkit.errors import ConfigError
from detkit.utils.textfile import NotUTF8, read_utf8

DEFAULTS_FILE = "defaults.yml"

# Keys that no longer exist, with the value older run directories' config.yml hold (accepted and dropped,
# so those runs still load) and why any other value is refused.
RETIRED_KEYS = {
    "train.jit_compile": (False, "XLA cannot compile the training step (proposal NMS and sampling have "
                                 "data-dependent shapes); remove the key"),
    "train.tpu_address": ("", "train.strategy tpu is not offered (see train.strategy); remove the key"),
    "eval.batch_size": (1, "evaluation runs one image at a time: zero-padding images to a common size changes "
                           "the backbone's features near their borders, so batched metrics would differ from "
                           "single-image ones; remove the key"),
}
# Values a key no longer accepts, and why.
RETIRED_VALUES = {
    ("train.strategy", "tpu"): "tpu is not offered: TPUs run only XLA-compiled programs and XLA cannot compile "
                               "the training step (proposal NMS and sampling have data-dependent shapes); use "
                               "one_device, mirrored or multi_worker",
}


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key path the schema accepts below `cls`."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        keys.append(path)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], path + "."))
    return keys


def _suggest(key: str) -> str:
    """A ' — did you mean X?' suffix with the closest valid key, or ''."""
    candidates = _all_keys(Config)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in candidates}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
        close = [leaves[near[0]]] if near else []
    return f" — did you mean {close[0]}?" if close else ""


def _type_name(tp: Any) -> str:
    """A short readable name for a type hint."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp` and return it converted (int -> float etc.)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: expected a mapping (section), got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" — did you mean {near[0]}?" if near else ""
            raise ConfigError(f"config key {key}: expected {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e30" (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key}: expected str, got {value!r}")
        return str(value)
    raise ConfigError(f"config key {key}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kept = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key in names:
            if isinstance(value, str) and (full, value) in RETIRED_VALUES:
                raise ConfigError(f"config key {full}: {RETIRED_VALUES[(full, value)]}")
            kept[key] = value
        elif full in RETIRED_KEYS:
            accepted, why = RETIRED_KEYS[full]
            if value != accepted:
                raise ConfigError(f"config key {full}: no longer supported: {why}")
        else:
            raise ConfigError(f"unknown config key {full}{_suggest(full)}")
    kwargs = {name: _convert(value, hints[name], f"{prefix}{name}") for name, value in kept.items()}
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    """Recursively merge mapping `over` onto `base` (lists and scalars replace)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key} (remove one)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> dict:
    """Read one YAML mapping, with errors naming the file and line."""
    if os.path.isdir(path):
        raise ConfigError(f"config file {path}: is a directory, expected a YAML file")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path}: not found")
    try:
        text = read_utf8(path)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    except NotUTF8 as exc:
        raise ConfigError(f"config file {path} {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def default_dict() -> dict:
    """The package's documented defaults as a plain mapping."""
    text = resources.files("detkit.config").joinpath(DEFAULTS_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> dict:
    """Turn 'a.b.c=value' into {'a': {'b': {'c': value}}}, value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return nested({key: value})


def merged_dict(config_files: Iterable[str] = (), overrides: Iterable[str] = (), base: Optional[dict] = None) -> dict:
    """Defaults (or `base`), then each config file, then each override, merged in that order."""
    data = default_dict() if base is None else base
    for path in config_files:
        data = _merge(data, _read_yaml(path))
    for item in overrides:
        data = _merge(data, parse_override(item))
    return data


def from_dict(data: dict, check_ranges: bool = True) -> Config:
    """Validate a full or partial mapping into a Config (missing keys keep schema defaults).

    check_ranges=False checks keys and types only: for a config that is not final yet (the recipe fills it in).
    """
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping of sections")
    config = _build(Config, data)
    if check_ranges:
        check_values(config)
    return config


def load_config(config_files: Iterable[str] = (), overrides: Iterable[str] = (),
                under: Optional[dict] = None) -> Config:
    """The one entry point: defaults (+ `under`, e.g. a recipe's values) + files + overrides, validated."""
    base = default_dict() if under is None else _merge(default_dict(), under)
    return from_dict(merged_dict(list(config_files), list(overrides), base))


def nested(values: dict[str, Any]) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}."""
    out: dict = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def flat_keys(data: dict, prefix: str = "") -> set[str]:
    """The dotted leaf keys of a nested mapping."""
    keys: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        keys |= flat_keys(value, path + ".") if isinstance(value, dict) and value else {path}
    return keys


def to_dict(config: Any) -> dict:
    """A Config (or section) as a plain mapping."""
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    """A Config as YAML text, in schema order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)
