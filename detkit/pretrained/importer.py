"""Turn a torchvision Faster R-CNN `.pth` into a detkit run directory (`detkit checkpoint import`)."""
from __future__ import annotations

import datetime
import os
import re
import shutil
from typing import Optional

import numpy as np

from detkit.config import dump_yaml
from detkit.errors import CheckpointError, StateDictError
from detkit.models.build import build_detector
from detkit.pretrained import torchvision as tv
from detkit.pretrained.classes import resolve_class_names
from detkit.pretrained.pth import read_state_dict
from detkit.runs import layout
from detkit.runs.lock import check_not_training
from detkit.utils import atomic
from detkit.utils.digest import sha256_of
from detkit.utils.tf_quiet import import_tensorflow

STAGING_PREFIX = "import"
# Keys of torchvision before 0.13 (see upgrade_old_torchvision_keys).
_OLD_FPN_KEY = re.compile(r"^(.*fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")
_OLD_RPN_KEY = re.compile(r"^(.*rpn\.head\.)conv\.(weight|bias)$")


def upgrade_old_torchvision_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Key names of torchvision before 0.13 renamed as torchvision's own loader renames them.

    The published COCO weights were saved when the FPN's convs were `fpn.inner_blocks.I.weight` and the
    RPN conv `rpn.head.conv.weight`; today they sit one or two Sequential levels deeper (`.I.0.weight`,
    `conv.0.0.weight`), and torchvision renames them on load (FeaturePyramidNetwork and RPNHead version 2).
    """
    renamed = {}
    for key, value in state.items():
        new = _OLD_FPN_KEY.sub(r"\1.0.\2", key)
        new = _OLD_RPN_KEY.sub(r"\1conv.0.0.\2", new)
        renamed[new] = value
    return renamed


def _check_output(output_dir: str, overwrite: bool) -> None:
    """Refuse an output that holds anything but a previous import (and that one without `overwrite`)."""
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise CheckpointError(f"--output {output_dir}: is a file; choose a directory for the run")
    if not os.listdir(output_dir):
        return
    if not os.path.isfile(os.path.join(output_dir, layout.IMPORT_RECORD_FILE)):
        raise CheckpointError(f"--output {output_dir}: already exists and is not a run made by `detkit checkpoint "
                              "import`; choose a new directory")
    if not overwrite:
        raise CheckpointError(f"--output {output_dir}: already holds an imported run; pass --overwrite to replace it")
    check_not_training(output_dir, doing="replacing")


def import_checkpoint(pth_path: str, output_dir: str, arch: Optional[str] = None, classes: Optional[str] = None,
                      overwrite: bool = False) -> str:
    """Read a torchvision Faster R-CNN state dict and write it as a run directory; returns the run dir.

    `arch` is recognised from the keys when None; `classes` is "coco", "a,b,...", a file of names, or None
    (COCO's 90 slots when the checkpoint has 90 classes). The run appears complete or not at all.
    """
    if not os.path.isfile(pth_path):
        raise CheckpointError(f"{pth_path}: no such file")
    _check_output(output_dir, overwrite)
    state = upgrade_old_torchvision_keys(read_state_dict(pth_path))
    if arch is None:
        try:
            arch = tv.detect_arch(list(state), filename=os.path.basename(pth_path))
        except StateDictError as exc:
            raise StateDictError(f"{pth_path}: {exc}") from None
    elif arch not in tv.ARCHS:
        raise CheckpointError(f"--arch {arch}: unknown (choose from {', '.join(tv.ARCHS)})")
    names = resolve_class_names(classes, tv.num_classes_in(state), pth_path)
    tf = import_tensorflow()
    config = tv.arch_config(arch)
    model = build_detector(config, len(names))
    tv.assign_state_dict(model, state, arch)

    parent = os.path.dirname(os.path.abspath(output_dir))
    atomic.remove_stale_temp(parent, STAGING_PREFIX)
    staging = atomic.make_temp_dir(parent, STAGING_PREFIX)
    try:
        atomic.write_text(layout.config_path(staging), dump_yaml(config))
        atomic.write_json(layout.classes_path(staging), names)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), layout.checkpoint_dir(staging),
                                   max_to_keep=1).save(checkpoint_number=0)
        atomic.write_json(os.path.join(staging, layout.IMPORT_RECORD_FILE), {
            "source": os.path.basename(pth_path),
            "sha256": sha256_of(pth_path),
            "arch": arch,
            "classes": "coco" if classes in (None, "coco") else "custom",
            "imported": datetime.datetime.now().isoformat(timespec="seconds"),
        })
        atomic.replace_dir(staging, output_dir)
    except OSError as exc:
        raise CheckpointError(f"--output {output_dir}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
