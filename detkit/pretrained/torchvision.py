"""torchvision's Faster R-CNN state dicts -> detkit's fpn models: which arch, which config, which weights."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from detkit.errors import StateDictError
from detkit.pretrained.torch_layers import TorchParam, load_torch_state

if TYPE_CHECKING:
    from detkit.models.fpn_rcnn import FPNFasterRCNN

ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn")

_CLS_SCORE = "roi_heads.box_predictor.cls_score.weight"
_BBOX_PRED = "roi_heads.box_predictor.bbox_pred"
# A key only each body has.
_RESNET_KEY = "backbone.body.layer1.0.conv1.weight"
_MOBILENET_KEY = "backbone.body.16.0.weight"

# torchvision's FasterRCNN defaults (and each builder's own), as detkit config values.
_COMMON = [
    "model.architecture=fpn",
    "model.base_network.weights=none",
    "model.base_network.freeze_batchnorm=true",
    "model.anchors.ratios=[0.5, 1.0, 2.0]",
    "model.fpn.channels=256",
    "model.fpn.size_divisible=32",
    "model.rpn.channels=256",
    "model.rpn.target.foreground_iou=0.7",
    "model.rpn.target.background_iou_high=0.3",
    "model.rpn.target.background_iou_low=0.0",
    "model.rpn.target.minibatch_size=256",
    "model.rpn.target.foreground_fraction=0.5",
    "model.rpn.allowed_border=-1.0",
    "model.rpn.match_low_quality=true",
    "model.rpn.train_proposals.pre_nms_top_n=2000",
    "model.rpn.train_proposals.post_nms_top_n=2000",
    "model.rpn.nms_iou=0.7",
    "model.rpn.min_box_size=0.001",
    "model.rpn.smooth_l1_beta=0.1111111111111111",
    "model.rcnn.enabled=true",
    "model.rcnn.head=fc",
    "model.rcnn.reduce_channels=0",
    "model.rcnn.fc_sizes=[1024, 1024]",
    "model.rcnn.dropout=0.0",
    "model.rcnn.target.foreground_iou=0.5",
    "model.rcnn.target.background_iou_high=0.5",
    "model.rcnn.target.background_iou_low=0.0",
    "model.rcnn.target.minibatch_size=512",
    "model.rcnn.target.foreground_fraction=0.25",
    "model.rcnn.add_gt_boxes=true",
    "model.rcnn.box_weights=[10.0, 10.0, 5.0, 5.0]",
    "model.rcnn.smooth_l1_beta=0.1111111111111111",
    "model.postprocess.score_threshold=0.05",
    "model.postprocess.nms_iou=0.5",
    "model.postprocess.max_per_class=100",
    "model.postprocess.max_total=100",
    "model.postprocess.min_box_size=0.01",
    "model.fpn.roi_align.output_size=7",
    "model.fpn.roi_align.sampling_ratio=2",
    "model.fpn.roi_align.canonical_size=224.0",
    "model.fpn.roi_align.canonical_level=4",
    "dataset.image.size_rounding=floor",
]
_OVERRIDES = {
    "fasterrcnn_resnet50_fpn": [
        "model.base_network.name=resnet50_tv",
        "model.base_network.trainable_layers=3",
        "model.fpn.anchor_sizes=[[32], [64], [128], [256], [512]]",
        "model.fpn.rpn_score_threshold=0.0",
        "model.rpn.test_proposals.pre_nms_top_n=1000",
        "model.rpn.test_proposals.post_nms_top_n=1000",
        "dataset.image.min_size=800",
        "dataset.image.max_size=1333",
    ],
    "fasterrcnn_mobilenet_v3_large_fpn": [
        "model.base_network.name=mobilenet_v3_large_tv",
        "model.base_network.trainable_layers=3",
        "model.fpn.anchor_sizes=[[32, 64, 128, 256, 512], [32, 64, 128, 256, 512], [32, 64, 128, 256, 512]]",
        "model.fpn.rpn_score_threshold=0.05",
        "model.rpn.test_proposals.pre_nms_top_n=1000",
        "model.rpn.test_proposals.post_nms_top_n=1000",
        "dataset.image.min_size=800",
        "dataset.image.max_size=1333",
    ],
}
_OVERRIDES["fasterrcnn_mobilenet_v3_large_320_fpn"] = [
    o for o in _OVERRIDES["fasterrcnn_mobilenet_v3_large_fpn"] if not o.startswith(("dataset.", "model.rpn.test"))
] + [
    "model.rpn.test_proposals.pre_nms_top_n=150",
    "model.rpn.test_proposals.post_nms_top_n=150",
    "dataset.image.min_size=320",
    "dataset.image.max_size=640",
]
_BODY = {"fasterrcnn_resnet50_fpn": "resnet50_tv", "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large_tv",
         "fasterrcnn_mobilenet_v3_large_320_fpn": "mobilenet_v3_large_tv"}


def _check_arch(arch: str) -> None:
    """Refuse an arch name that is not one of ARCHS."""
    if arch not in ARCHS:
        raise StateDictError(f"unknown torchvision arch {arch!r}; choose from {', '.join(ARCHS)}")


def arch_in_file_name(filename: str) -> str | None:
    """The arch a file name spells, as torchvision's published files do (`..._320_fpn-907ea3f9.pth`); None if none."""
    base = os.path.basename(filename)
    # Longest first: "..._large_fpn" is not a part of "..._large_320_fpn", but keep the rule independent of that.
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


def config_overrides(arch: str) -> list[str]:
    """The `-o key=value` strings that give the detkit model config of a torchvision arch."""
    _check_arch(arch)
    return list(_COMMON) + list(_OVERRIDES[arch])


def _bbox_pred_params(layer, suffix: str) -> TorchParam:
    """torchvision predicts deltas for the background too (its first 4 rows); detkit has none: drop/restore them."""
    if suffix == "weight":
        return TorchParam("weight", layer.kernel, lambda w: w[4:].T,
                          lambda k: np.concatenate([np.zeros((4, k.shape[0]), k.dtype), k.T]))
    return TorchParam("bias", layer.bias, lambda b: b[4:], lambda b: np.concatenate([np.zeros(4, b.dtype), b]))


def _tag_box_predictor(model: FPNFasterRCNN) -> None:
    """Give the class-specific box layer its background-free conversion."""
    box = model.rcnn_head.box
    if not hasattr(box, "torch_params"):
        box.torch_params = lambda: [_bbox_pred_params(box, "weight"), _bbox_pred_params(box, "bias")]


def assign_state_dict(model: FPNFasterRCNN, state: Mapping[str, np.ndarray], arch: str) -> None:
    """Set every variable of a built fpn model of `arch` from a torchvision state dict, using every key."""
    _check_arch(arch)
    body = model.cfg.base_network.name if getattr(model, "cfg", None) is not None else None
    if getattr(model, "fpn", None) is None or body != _BODY[arch]:
        raise StateDictError(f"the model is not a {arch} (build it with config_overrides({arch!r}))")
    if model.rcnn_head is None:
        raise StateDictError("the model has no R-CNN head (model.rcnn.enabled is false)")
    expected = (4 * (model.num_classes + 1), model.cfg.rcnn.fc_sizes[-1])
    key = f"{_BBOX_PRED}.weight"
    if key in state and tuple(np.shape(state[key])) != expected:
        raise StateDictError(f"state dict key {key}: shape {tuple(np.shape(state[key]))} does not fit, "
                             f"expected {expected}")
    _tag_box_predictor(model)
    load_torch_state(model, state)


def export_state_dict(model: FPNFasterRCNN) -> dict[str, np.ndarray]:
    """The model's weights as a torchvision state dict (the background's box rows are zeros)."""
    from detkit.pretrained.torch_layers import torch_state

    _tag_box_predictor(model)
    return torch_state(model)
