"""Shared by the distributed and precision tests: a tiny synthetic dataset in two shards."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> str:
    """Eight 128x96 images with one white 50x40 box each, in two shard files (one per worker).

    Same-size images, no flips, no shuffling and frozen BatchNorm: a global batch of 2 is then the same two
    images, computed the same way, whether one process takes both or two workers take one each.
    """
    from click.testing import CliRunner

    from detkit.cli.main import cli

    root = tmp_path_factory.mktemp("dist_data")
    (root / "images").mkdir()
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(8):
        a = np.zeros((96, 128, 3), np.uint8)
        x0, y0 = 5 + 7 * i, 5 + 4 * i
        a[y0:y0 + 40, x0:x0 + 50] = 255
        Image.fromarray(a).save(root / "images" / f"im{i}.png")
        rows.append(f"im{i}.png,128,96,box,{x0},{y0},{x0 + 50},{y0 + 40}")
    (root / "synth.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(root / "synth.csv"),
                                      "--images-dir", str(root / "images"), "--output-dir", str(root / "ds"),
                                      "--split", "synth", "--num-shards", "2"], standalone_mode=False)
    assert result.exception is None, result.output
    return str(root / "ds")
