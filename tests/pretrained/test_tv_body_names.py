"""The name table of torchvision-layout bodies: every weight-owning layer under its torchvision module path, and
body weights from torchvision's state dict saved as .npz."""
import numpy as np
import pytest

from detkit.errors import StateDictError
from detkit.models.build import build_detector
from detkit.models.tv_mobilenet_v3 import tv_mobilenet_v3_large
from detkit.models.tv_resnet import tv_resnet
from detkit.pretrained import torchvision as tv
from detkit.pretrained.initial_weights import load_initial_weights
from detkit.pretrained.torch_layers import expected_torch_shapes, torch_state


def test_resnet50_names_and_shapes():
    model = tv_resnet(50, trainable_layers=3)
    names = tv.body_modules(model)
    # conv1 + bn1, 16 bottlenecks x 3 (conv + bn), 4 projections (conv + bn).
    assert len(names) == 2 + 16 * 6 + 4 * 2
    shapes = expected_torch_shapes(names, "backbone.body.")
    assert shapes["backbone.body.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["backbone.body.layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["backbone.body.layer2.0.conv2.weight"] == (128, 128, 3, 3)  # the stride is in the 3x3 conv
    assert names["layer2.0.conv2"].strides == (2, 2) and names["layer2.0.conv1"].strides == (1, 1)
    assert shapes["backbone.body.layer4.2.bn3.running_var"] == (2048,)


def test_mobilenet_names_and_shapes():
    names = tv.body_modules(tv_mobilenet_v3_large(trainable_layers=3))
    shapes = expected_torch_shapes(names, "backbone.body.")
    assert len(shapes) == 262
    assert shapes["backbone.body.0.0.weight"] == (16, 3, 3, 3)
    assert shapes["backbone.body.1.block.0.0.weight"] == (16, 1, 3, 3)  # no expansion in block 1: depthwise first
    assert shapes["backbone.body.4.block.1.0.weight"] == (72, 1, 5, 5)
    assert shapes["backbone.body.4.block.2.fc1.weight"] == (24, 72, 1, 1)  # _make_divisible(72 // 4) = 24
    assert shapes["backbone.body.4.block.2.fc1.bias"] == (24,)
    assert shapes["backbone.body.4.block.3.1.running_mean"] == (40,)
    assert shapes["backbone.body.16.0.weight"] == (960, 160, 1, 1)
    # The ImageNet classifier keeps its `features.` prefix.
    assert "features.16.0" in tv.body_modules(tv_mobilenet_v3_large(), classifier=True)


def test_a_new_run_loads_body_weights_from_a_torch_npz(tmp_path):
    cfg = tv.arch_config("fasterrcnn_mobilenet_v3_large_320_fpn")
    source = tv_mobilenet_v3_large(frozen_bn=True)
    rng = np.random.default_rng(0)
    state = {f"backbone.body.{k}": rng.normal(size=v.shape).astype(np.float32)
             for k, v in torch_state(tv.body_modules(source)).items()}
    state["backbone.fpn.inner_blocks.0.0.weight"] = np.zeros((256, 160, 1, 1), np.float32)  # not the body's
    path = str(tmp_path / "detector.npz")
    np.savez(path, **state)
    cfg.model.base_network.weights = path
    model = build_detector(cfg, 2)
    load_initial_weights(model, cfg.model.base_network)
    loaded = torch_state(tv.body_modules(model.backbone), "backbone.body.")
    assert sorted(loaded) == sorted(k for k in state if k.startswith("backbone.body."))
    np.testing.assert_array_equal(loaded["backbone.body.4.block.1.0.weight"], state["backbone.body.4.block.1.0.weight"])
    # Pretrained weights: torchvision's default of three trainable stages.
    names = tv.body_modules(model.backbone)
    assert not names["6.block.0.0"].trainable and names["7.block.0.0"].trainable

    del state["backbone.body.16.1.running_var"]
    np.savez(path, **state)
    with pytest.raises(StateDictError, match=r"detector.npz: state dict has no key backbone.body.16.1.running_var "
                                             r"\(expected shape \(960,\)\)$"):
        load_initial_weights(build_detector(cfg, 2), cfg.model.base_network)
