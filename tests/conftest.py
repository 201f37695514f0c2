"""Shared test set-up: quiet TensorFlow, paths to the shared raccoon data, slow-test marker."""
from __future__ import annotations

import os
import sys

import pytest

from detkit.config.tiny import tiny_config_yaml
from detkit.utils.tf_quiet import import_tensorflow

import_tensorflow()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACCOON_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "datasets", "raccoon"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that train a model (minutes)")


@pytest.fixture(scope="session")
def raccoon_dir() -> str:
    if not os.path.isdir(RACCOON_DIR):
        pytest.skip(f"shared raccoon dataset not found at {RACCOON_DIR}")
    return RACCOON_DIR


@pytest.fixture
def run_detkit(monkeypatch, capsys):
    """`detkit ARGS` in-process through the real entry point (one-line errors, exit codes): (code, stdout, stderr)."""
    from detkit.cli.main import main

    def run(*args: object, env: dict | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["detkit", *[str(a) for a in args]])
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# ---------------------------------------------------------------- a tiny trained run, shared by CLI tests
def tiny_run_config(dataset_dir, job_dir) -> str:
    """The tiny model (detkit/config/tiny.py): 6 steps, checkpoints at 3 and 6."""
    return tiny_config_yaml(dataset_dir, job_dir, train={"num_steps": 6, "checkpoint_every_steps": 3},
                            eval={"split": "test"})


@pytest.fixture(scope="session")
def tiny_run(raccoon_dir, tmp_path_factory) -> dict:
    """A tiny small_resnet Faster R-CNN trained for 6 steps on the raccoon test split (40 images).

    Returns {"run_dir", "dataset_dir", "config" (the YAML used), "job_dir", "checkpoint" (ckpt-6 prefix),
    "step"}; the run has checkpoints ckpt-3 and ckpt-6. Shared read-only: copy it before changing it.
    About 15 s on 2 CPU cores.
    """
    from click.testing import CliRunner

    from detkit.cli.main import cli
    from detkit.config import load_config
    from detkit.train.trainer import train

    root = tmp_path_factory.mktemp("tiny_run")
    dataset_dir = root / "dataset"
    result = CliRunner().invoke(cli, [
        "dataset", "transform", "--type", "csv",
        "--annotations", os.path.join(raccoon_dir, "data", "test_labels.csv"),
        "--images-dir", os.path.join(raccoon_dir, "images"),
        "--output-dir", str(dataset_dir), "--split", "test",
    ])
    if result.exit_code != 0:
        raise RuntimeError(f"detkit dataset transform failed for tiny_run: {result.output}\n{result.exception!r}")
    config_path = root / "tiny.yml"
    config_path.write_text(tiny_run_config(dataset_dir, root / "jobs"), encoding="utf-8")
    trained = train(load_config([str(config_path)]))
    return {
        "run_dir": trained.run_dir,
        "dataset_dir": str(dataset_dir),
        "config": str(config_path),
        "job_dir": str(root / "jobs"),
        "checkpoint": trained.checkpoint,
        "step": trained.step,
    }


@pytest.fixture
def zoo_home(tiny_run, tmp_path, monkeypatch) -> str:
    """DETKIT_HOME in tmp_path with the tiny run installed as the downloaded model `fast`; returns its run dir."""
    import json
    import shutil

    from detkit.pretrained.importer import IMPORT_RECORD

    home = tmp_path / "detkit-home"
    run_dir = home / "models" / "fast"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    (run_dir / IMPORT_RECORD).write_text(json.dumps({"source": "tiny.pth", "arch": "tiny"}))
    monkeypatch.setenv("DETKIT_HOME", str(home))
    return str(run_dir)
