"""Shared test set-up: quiet TensorFlow, paths to the shared raccoon data, slow-test marker."""
from __future__ import annotations

import os
import sys
import tempfile

import pytest

from detkit.config.tiny import tiny_config_yaml
from detkit.utils.cpu import apply_onednn_workaround
from detkit.utils.tf_quiet import import_tensorflow

# This one process trains after it has run models, and oneDNN reads its cap once: the training cap from the start.
apply_onednn_workaround()
import_tensorflow()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model cache of the tests' own: models a developer has downloaded must not change what the tests train or
# predict (`detkit train --dataset-dir` fine-tunes a downloaded detector). Tests of the cache set their own.
os.environ["DETKIT_HOME"] = tempfile.mkdtemp(prefix="detkit-tests-home-")
# The raccoon photos and CSV labels shipped with the package: every test runs from a fresh clone.
PACKAGED_RACCOON = os.path.join(REPO_ROOT, "detkit", "data", "raccoon")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that train a model (minutes)")


@pytest.fixture(scope="session")
def raccoon_dir(tmp_path_factory) -> str:
    """The packaged raccoon set in the layout of the original dataset: images/, data/*_labels.csv (the
    packaged CSVs), and, written from those CSVs, Pascal VOC annotations/*.xml and COCO coco/instances_*.json."""
    import csv
    import json
    import shutil
    from xml.sax.saxutils import escape

    root = tmp_path_factory.mktemp("raccoon")
    os.symlink(os.path.join(PACKAGED_RACCOON, "images"), root / "images")
    for folder in ("data", "annotations", "coco"):
        (root / folder).mkdir()
    for split in ("train", "test"):
        source = os.path.join(PACKAGED_RACCOON, f"{split}_labels.csv")
        shutil.copy(source, root / "data" / f"{split}_labels.csv")
        with open(source, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        images: dict[str, dict] = {}
        for row in rows:
            image = images.setdefault(row["filename"], {"id": len(images) + 1, "file_name": row["filename"],
                                                        "width": int(row["width"]), "height": int(row["height"]),
                                                        "boxes": []})
            image["boxes"].append((row["class"], *(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))))
        annotations = []
        for image in images.values():
            objects = "".join(
                f"<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in image["boxes"])
            xml = (f"<annotation><folder>images</folder><filename>{image['file_name']}</filename><size>"
                   f"<width>{image['width']}</width><height>{image['height']}</height><depth>3</depth></size>"
                   f"<segmented>0</segmented>{objects}</annotation>\n")
            (root / "annotations" / (os.path.splitext(image["file_name"])[0] + ".xml")).write_text(xml)
            for _, x1, y1, x2, y2 in image["boxes"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
        coco = {"images": [{k: v for k, v in image.items() if k != "boxes"} for image in images.values()],
                "annotations": annotations, "categories": [{"id": 1, "name": "raccoon"}]}
        (root / "coco" / f"instances_{split}.json").write_text(json.dumps(coco))
    return str(root)


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

    from detkit.runs.layout import IMPORT_RECORD_FILE as IMPORT_RECORD

    home = tmp_path / "detkit-home"
    run_dir = home / "models" / "fast"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    (run_dir / IMPORT_RECORD).write_text(json.dumps({"source": "tiny.pth", "arch": "tiny"}))
    monkeypatch.setenv("DETKIT_HOME", str(home))
    return str(run_dir)
