"""Helpers shared by the robustness tests (a module with a unique name, so test modules can import it)."""
from __future__ import annotations

import importlib.util
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

_DATASET_CONFTEST = Path(__file__).resolve().parents[1] / "datasets" / "conftest.py"
_spec = importlib.util.spec_from_file_location("detkit_tests_dataset_helpers", _DATASET_CONFTEST)
dataset_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dataset_helpers)


@dataclass
class Outcome:
    """What one `detkit ...` run gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single `detkit: error:` line of a failed run, checking there is no traceback and no other error."""
        assert self.code != 0, (self.code, self.err[-2000:])
        assert "Traceback" not in self.err, self.err
        lines = [line for line in re.split(r"[\r\n]+", self.err) if line.startswith("detkit: error:")]
        assert len(lines) == 1, self.err
        assert lines[0] == self.err.rstrip("\n").split("\n")[-1], self.err  # the error is the last thing printed
        return lines[0][len("detkit: error: "):]


def is_root() -> bool:
    """Whether the tests run as root, where file modes do not stop writes."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height, with almost no pixel data (enough for Pillow's size check)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
