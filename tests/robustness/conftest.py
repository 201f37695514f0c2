"""Shared set-up for the robustness tests: the real `detkit` entry point in-process, and the dataset helpers."""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

_DATASET_CONFTEST = Path(__file__).resolve().parents[1] / "datasets" / "conftest.py"
_spec = importlib.util.spec_from_file_location("detkit_tests_dataset_helpers", _DATASET_CONFTEST)
dataset_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dataset_helpers)

# The dataset tests' fixtures (synthetic images and annotations, in-process CLI runs), reused as they are.
helpers = dataset_helpers.helpers
cli = dataset_helpers.cli


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


@pytest.fixture
def detkit(monkeypatch, capsys):
    """Run `detkit ARGS` through the real entry point (`main()`: one-line errors, exit codes) in-process."""
    from detkit.cli.main import main

    def run(*args: object) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["detkit", *[str(a) for a in args]])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def is_root() -> bool:
    """Whether the tests run as root, where file modes do not stop writes."""
    return hasattr(os, "geteuid") and os.geteuid() == 0
