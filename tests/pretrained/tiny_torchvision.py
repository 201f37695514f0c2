"""A stand-in for detkit.pretrained.torchvision's mapping for a tiny small_resnet model (no FPN, no torch).

The importer, zoo and CLI tests check what they own (reading, class names, run layout, cache, download,
default model) on a model that builds in a second; the real mappings are tested beside detkit/pretrained/torchvision.py.
"""
from __future__ import annotations

import sys
import types

import numpy as np

from detkit.errors import CheckpointError

ARCHS = ("tiny",)
MARKER_KEY = "tiny.marker"
OVERRIDES = [
    "model.base_network.name=small_resnet", "model.base_network.weights=none",
    "model.base_network.freeze_batchnorm=false", "model.base_network.small_widths=[8, 16, 16, 32]",
    "model.base_network.small_blocks=[0, 1, 1, 1]", "model.rpn.channels=32", "model.rcnn.fc_sizes=[64]",
    "model.rcnn.reduce_channels=0", "dataset.image.min_size=160", "dataset.image.max_size=224",
]


def detect_arch(keys, filename: str = "") -> str:
    if MARKER_KEY in keys:
        return "tiny"
    raise CheckpointError(f"{filename}: not a tiny checkpoint (no {MARKER_KEY})")


def num_classes_in(state) -> int:
    return int(state["cls.bias"].shape[0]) - 1


def arch_config(arch: str):
    from detkit.config import load_config

    return load_config(overrides=OVERRIDES)


def assign_state_dict(model, state, arch: str) -> None:
    bias = model.rcnn_head.cls.bias
    if tuple(bias.shape) != state["cls.bias"].shape:
        raise CheckpointError(f"cls.bias: expected shape {tuple(bias.shape)}, got {state['cls.bias'].shape}")
    bias.assign(state["cls.bias"])


def tiny_state(num_classes: int = 90) -> dict:
    """A state dict the stand-in accepts: class biases 0.0, 0.01, 0.02, ... (background first)."""
    return {MARKER_KEY: np.zeros(1, np.float32),
            "cls.bias": (np.arange(num_classes + 1) / 100).astype(np.float32)}


def install(monkeypatch) -> types.ModuleType:
    """Make the importer (and any later `from detkit.pretrained import torchvision`) use this stand-in for one test."""
    import detkit.pretrained
    from detkit.pretrained import importer

    module = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "detkit.pretrained.torchvision", module)
    monkeypatch.setattr(detkit.pretrained, "torchvision", module, raising=False)
    monkeypatch.setattr(importer, "tv", module)
    return module
