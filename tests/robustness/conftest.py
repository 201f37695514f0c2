"""Fixtures for the robustness tests: the real `detkit` entry point in-process, and the dataset helpers."""
from __future__ import annotations


import pytest
from robust_helpers import Outcome, dataset_helpers

# The dataset tests' fixtures (synthetic images and annotations, in-process CLI runs), reused as they are.
helpers = dataset_helpers.helpers
cli = dataset_helpers.cli


@pytest.fixture
def detkit(run_detkit):
    """Run `detkit ARGS` through the real entry point (`main()`: one-line errors, exit codes) in-process."""
    return lambda *args: Outcome(*run_detkit(*args))
