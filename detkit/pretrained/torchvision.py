"""torchvision's Faster R-CNN state dicts -> detkit's fpn models: which arch, which config, which weights.

The weights map by a name table: torchvision's module path of every weight-owning layer -> the Keras layer
of detkit's model. The bodies' layers are named after torchvision's paths ("layer1.0.conv1" is the Keras layer
"layer1_0_conv1", see detkit/models/tv_layers.py); the FPN, RPN and box head are listed below.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Mapping

import keras
import numpy as np

from detkit.config.checks import check_values
from detkit.config.schema import (BaseNetworkConfig, Config, FPNConfig, ImageConfig, PostprocessConfig,
                                  ProposalsConfig, RCNNConfig, RoIAlignConfig, RPNConfig, TargetConfig)
from detkit.errors import StateDictError
from detkit.pretrained.torch_layers import ModuleTable, TorchParam, load_torch_state, torch_state

if TYPE_CHECKING:
    from detkit.models.faster_rcnn import FasterRCNN

ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn")

_CLS_SCORE = "roi_heads.box_predictor.cls_score.weight"
_BBOX_PRED = "roi_heads.box_predictor.bbox_pred"
# A key only each body has.
_RESNET_KEY = "backbone.body.layer1.0.conv1.weight"
_MOBILENET_KEY = "backbone.body.16.0.weight"
# torchvision detectors keep the body's weights under this key prefix.
BODY_PREFIX = "backbone.body."
_BODY = {"fasterrcnn_resnet50_fpn": "resnet50_tv", "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large_tv",
         "fasterrcnn_mobilenet_v3_large_320_fpn": "mobilenet_v3_large_tv"}
_MOBILENET_SIZES = [[32.0, 64.0, 128.0, 256.0, 512.0]] * 3


def _check_arch(arch: str) -> None:
    """Refuse an arch name that is not one of ARCHS."""
    if arch not in ARCHS:
        raise StateDictError(f"unknown torchvision arch {arch!r}; choose from {', '.join(ARCHS)}")


def arch_config(arch: str) -> Config:
    """The detkit config of a torchvision arch: torchvision's FasterRCNN defaults and its builder's own."""
    _check_arch(arch)
    mobile = arch != "fasterrcnn_resnet50_fpn"
    small = arch == "fasterrcnn_mobilenet_v3_large_320_fpn"
    test_top_n = 150 if small else 1000
    cfg = Config()
    cfg.dataset.image = ImageConfig(min_size=320 if small else 800, max_size=640 if small else 1333,
                                    size_rounding="floor")
    m = cfg.model
    m.architecture = "fpn"
    m.base_network = BaseNetworkConfig(name=_BODY[arch], weights="none", freeze_batchnorm=True, trainable_layers=3)
    m.anchors.ratios = [0.5, 1.0, 2.0]
    m.fpn = FPNConfig(channels=256, size_divisible=32, rpn_score_threshold=0.05 if mobile else 0.0,
                      anchor_sizes=_MOBILENET_SIZES if mobile else [[32.0], [64.0], [128.0], [256.0], [512.0]],
                      roi_align=RoIAlignConfig(output_size=7, sampling_ratio=2, canonical_size=224.0,
                                               canonical_level=4))
    m.rpn = RPNConfig(channels=256, target=TargetConfig(0.7, 0.3, 0.0, 256, 0.5), allowed_border=-1.0,
                      match_low_quality=True, train_proposals=ProposalsConfig(2000, 2000),
                      test_proposals=ProposalsConfig(test_top_n, test_top_n), nms_iou=0.7, min_box_size=0.001,
                      smooth_l1_beta=1.0 / 9.0)
    m.rcnn = RCNNConfig(enabled=True, head="fc", reduce_channels=0, fc_sizes=[1024, 1024], dropout=0.0,
                        target=TargetConfig(0.5, 0.5, 0.0, 512, 0.25), add_gt_boxes=True,
                        box_weights=[10.0, 10.0, 5.0, 5.0], smooth_l1_beta=1.0 / 9.0)
    m.postprocess = PostprocessConfig(score_threshold=0.05, nms_iou=0.5, max_per_class=100, max_total=100,
                                      min_box_size=0.01)
    check_values(cfg)
    return cfg


def arch_in_file_name(filename: str) -> str | None:
    """The arch a file name spells, as torchvision's published files do (`..._320_fpn-907ea3f9.pth`); None if none."""
    base = os.path.basename(filename)
    for arch in sorted(ARCHS, key=len, reverse=True):
        if arch in base:
            return arch
    return None


def detect_arch(keys: Iterable[str], filename: str = "") -> str:
    """The arch whose keys these are; the two MobileNet variants share every key, so the file name must say which."""
    keys = set(keys)
    if _CLS_SCORE not in keys:
        raise StateDictError(f"not a torchvision Faster R-CNN state dict: no key {_CLS_SCORE}")
    if _RESNET_KEY in keys:
        candidates = ["fasterrcnn_resnet50_fpn"]
    elif _MOBILENET_KEY in keys:
        candidates = ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"]
    else:
        raise StateDictError(f"unknown Faster R-CNN body: neither {_RESNET_KEY} (ResNet-50) nor {_MOBILENET_KEY} "
                             "(MobileNetV3-Large) is in the state dict; give --arch")
    named = arch_in_file_name(filename)
    if named is not None and named not in candidates:
        raise StateDictError(f"the file name says {named} but the weights are those of {' or '.join(candidates)}; "
                             "give --arch")
    if named is not None:
        return named
    if len(candidates) == 1:
        return candidates[0]
    raise StateDictError(f"the weights fit both {candidates[0]} (800-1333 px) and {candidates[1]} (320-640 px), "
                         "which share every key, and the file name names neither; give --arch")


def num_classes_in(state: Mapping[str, np.ndarray]) -> int:
    """detkit's class count (background excluded) of a torchvision Faster R-CNN state dict."""
    if _CLS_SCORE not in state:
        raise StateDictError(f"state dict has no key {_CLS_SCORE}")
    shape = tuple(np.shape(state[_CLS_SCORE]))
    if len(shape) != 2 or shape[0] < 2:
        raise StateDictError(f"state dict key {_CLS_SCORE}: shape {shape} does not fit, expected (classes + 1, 1024)")
    return int(shape[0]) - 1


# ---------------------------------------------------------------- the name tables
def body_modules(body: keras.Model, classifier: bool = False) -> dict[str, keras.layers.Layer]:
    """torchvision module path -> layer for every weight-owning layer of a torchvision-layout body.

    MobileNetV3's layers are named after the classifier's `features.N...`; the detector's body is that
    Sequential itself (`N...`), so the prefix goes unless `classifier`.
    """
    out = {}
    for layer in body.layers:
        if not layer.weights:
            continue
        path = layer.name.replace("_", ".")
        if path.startswith("features.") and not classifier:
            path = path[len("features."):]
        out[path] = layer
    return out


def _bbox_pred_params(layer: keras.layers.Dense) -> list[TorchParam]:
    """torchvision predicts deltas for the background too (its first 4 rows); detkit has none: drop/restore them."""
    return [TorchParam("weight", layer.kernel, lambda w: w[4:].T,
                       lambda k: np.concatenate([np.zeros((4, k.shape[0]), k.dtype), k.T])),
            TorchParam("bias", layer.bias, lambda b: b[4:], lambda b: np.concatenate([np.zeros(4, b.dtype), b]))]


def detector_modules(model: FasterRCNN) -> ModuleTable:
    """torchvision module path -> layer (or parameter function) for every weight of a detkit fpn detector."""
    table: dict = {BODY_PREFIX + path: layer for path, layer in body_modules(model.backbone).items()}
    for i, (inner, outer) in enumerate(zip(model.fpn.inner_blocks, model.fpn.layer_blocks)):
        # torchvision >= 0.13 wraps each FPN conv in Conv2dNormActivation: the conv is its child "0".
        table[f"backbone.fpn.inner_blocks.{i}.0"] = inner
        table[f"backbone.fpn.layer_blocks.{i}.0"] = outer
    head = model.rpn_head
    table.update({"rpn.head.conv.0.0": head.conv, "rpn.head.cls_logits": head.cls, "rpn.head.bbox_pred": head.box})
    box = model.rcnn_head
    table.update({f"roi_heads.box_head.fc{i + 6}": fc for i, fc in enumerate(box.fcs)})
    table["roi_heads.box_predictor.cls_score"] = box.cls
    table[_BBOX_PRED] = lambda: _bbox_pred_params(box.box)
    return table


def _check_model(model: FasterRCNN, arch: str) -> None:
    """Refuse a model that is not built as `arch`."""
    _check_arch(arch)
    expected = arch_config(arch).model
    if model.fpn is None or model.backbone.name != _BODY[arch]:
        raise StateDictError(f"the model is not a {arch} (build it from arch_config({arch!r}))")
    if model.rcnn_head is None:
        raise StateDictError("the model has no R-CNN head (model.rcnn.enabled is false)")
    if [fc.units for fc in model.rcnn_head.fcs] != expected.rcnn.fc_sizes:
        raise StateDictError(f"the model's box head is not {arch}'s (fc sizes {expected.rcnn.fc_sizes})")


def assign_state_dict(model: FasterRCNN, state: Mapping[str, np.ndarray], arch: str) -> None:
    """Set every variable of a built fpn model of `arch` from a torchvision state dict, using every key."""
    _check_model(model, arch)
    expected = (4 * (model.num_classes + 1), model.rcnn_head.fcs[-1].units)
    key = f"{_BBOX_PRED}.weight"
    if key in state and tuple(np.shape(state[key])) != expected:
        raise StateDictError(f"state dict key {key}: shape {tuple(np.shape(state[key]))} does not fit, "
                             f"expected {expected}")
    load_torch_state(detector_modules(model), state)


def export_state_dict(model: FasterRCNN) -> dict[str, np.ndarray]:
    """The model's weights as a torchvision state dict (the background's box rows are zeros)."""
    return torch_state(detector_modules(model))

