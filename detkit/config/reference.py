"""The config reference (docs/config.md), generated from the schema and the comments of defaults.yml."""
from __future__ import annotations

import dataclasses
import re
import typing
from importlib import resources

from detkit.config.loader import DEFAULTS_FILE, _type_name, default_dict
from detkit.config.schema import Config

_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#]*)(#\s?(?P<comment>.*))?$")


def _comments() -> dict[str, str]:
    """Dotted key -> the comments written above and beside it in defaults.yml."""
    text = resources.files("detkit.config").joinpath(DEFAULTS_FILE).read_text(encoding="utf-8")
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if line.startswith(" "):  # top-of-file comments describe the file, not a key
                pending.append(stripped.lstrip("#").strip())
            continue
        match = _LINE.match(line)
        if not match:
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        key = ".".join(k for _, k in stack)
        parts = pending + ([match["comment"].strip()] if match["comment"] else [])
        out[key] = " ".join(p for p in parts if p)
        pending = []
    return out


def _rows(cls: type, data: dict, comments: dict[str, str], prefix: str = "") -> list[str]:
    """Markdown table rows for every leaf key below `cls`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append(f"| **`{key}`** | section | | {comments.get(key) or tp.__doc__ or ''} |")
            rows += _rows(tp, data.get(f.name, {}), comments, key + ".")
        else:
            default = data.get(f.name)
            shown = "null" if default is None else repr(default) if isinstance(default, str) else str(default)
            description = comments.get(key, "").replace("|", "\\|")
            rows.append(f"| `{key}` | {_type_name(tp)} | `{shown}` | {description} |")
    return rows


def reference_markdown() -> str:
    """The full config reference as Markdown."""
    header = [
        "# detkit configuration reference",
        "",
        "Generated from `detkit/config/schema.py` and `detkit/config/defaults.yml` by `detkit config reference`;",
        "do not edit by hand. Every command reads this one schema: defaults, then `-c` files, then `-o key=value`.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    return "\n".join(header + _rows(Config, default_dict(), _comments())) + "\n"
