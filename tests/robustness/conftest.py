"""Fixtures for the robustness tests: the real `detkit` entry point in-process, and the dataset helpers."""
from __future__ import annotations

import sys

import pytest
from robust_helpers import Outcome, dataset_helpers

# The dataset tests' fixtures (synthetic images and annotations, in-process CLI runs), reused as they are.
helpers = dataset_helpers.helpers
cli = dataset_helpers.cli


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
