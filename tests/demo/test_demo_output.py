"""`detkit demo --output DIR` deletes only what a demo made there (its marker file proves it), never a user's runs."""
from __future__ import annotations

import pytest

from detkit.demo import MARKER, _prepare_output
from detkit.errors import DetkitError


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, run_detkit):
    # A project folder: the default train.job_dir (./jobs) holds the user's trained runs.
    (tmp_path / "jobs" / "my-run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "jobs" / "my-run" / "config.yml").write_text("mine")
    code, out, err = run_detkit("demo", "--output", tmp_path, "--minutes", "0.1")
    assert code == 1 and out == ""
    assert err.strip() == (f"detkit: error: {tmp_path}: already holds jobs, not written by `detkit demo` "
                           "(no .detkit-demo marker); choose an empty or new --output")
    assert (tmp_path / "jobs" / "my-run" / "config.yml").read_text() == "mine"
    assert not (tmp_path / MARKER).exists()


def test_demo_reruns_replace_only_its_own_folders(tmp_path):
    out = tmp_path / "demo"
    _prepare_output(str(out))  # a first run marks the folder
    assert (out / MARKER).is_file()
    for folder in ("data", "jobs/demo/checkpoints", "predictions", "jobs/users-run"):
        (out / folder).mkdir(parents=True)
        (out / folder / "f").write_text("x")
    (out / "my-notes.txt").write_text("keep")
    _prepare_output(str(out))
    assert not (out / "data").exists() and not (out / "jobs" / "demo").exists() and not (out / "predictions").exists()
    assert (out / "jobs" / "users-run" / "f").read_text() == "x"  # jobs/ itself is not the demo's
    assert (out / "my-notes.txt").read_text() == "keep"


def test_demo_writes_into_an_empty_or_unrelated_folder(tmp_path):
    (tmp_path / "README.txt").write_text("mine")
    _prepare_output(str(tmp_path))
    assert (tmp_path / MARKER).is_file() and (tmp_path / "README.txt").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.html").write_text("<p>mine</p>")
    with pytest.raises(DetkitError, match="already holds summary.html"):
        _prepare_output(str(tmp_path / "other"))
    assert (tmp_path / "other" / "summary.html").read_text() == "<p>mine</p>"
