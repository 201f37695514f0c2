"""MobileNetV3-Large `features` as torchvision builds them for Faster R-CNN, returning its last two stages."""
from __future__ import annotations

from typing import NamedTuple

import keras

from detkit.models.tv_layers import TORCH_BN_EPS, conv, freeze_where, keras_name, norm_layer


class BlockSetting(NamedTuple):
    """One InvertedResidual row of the MobileNetV3 paper's Table 1."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    hardswish: bool
    stride: int


# torchvision's _mobilenet_v3_conf("mobilenet_v3_large") (width 1.0, full tail, no dilation).
LARGE = (
    BlockSetting(16, 3, 16, 16, False, False, 1),
    BlockSetting(16, 3, 64, 24, False, False, 2),
    BlockSetting(24, 3, 72, 24, False, False, 1),
    BlockSetting(24, 5, 72, 40, True, False, 2),
    BlockSetting(40, 5, 120, 40, True, False, 1),
    BlockSetting(40, 5, 120, 40, True, False, 1),
    BlockSetting(40, 3, 240, 80, False, True, 2),
    BlockSetting(80, 3, 200, 80, False, True, 1),
    BlockSetting(80, 3, 184, 80, False, True, 1),
    BlockSetting(80, 3, 184, 80, False, True, 1),
    BlockSetting(80, 3, 480, 112, True, True, 1),
    BlockSetting(112, 3, 672, 112, True, True, 1),
    BlockSetting(112, 5, 672, 160, True, True, 2),
    BlockSetting(160, 5, 960, 160, True, True, 1),
    BlockSetting(160, 5, 960, 160, True, True, 1),
)
# features.0 (stem), features.1..15 (blocks), features.16 (1x1 conv to 6 x 160).
NUM_FEATURES = len(LARGE) + 2
# _mobilenet_extractor: stage starts are the stem, every strided block, and the last layer.
STAGE_INDICES = (0,) + tuple(i + 1 for i, s in enumerate(LARGE) if s.stride > 1) + (NUM_FEATURES - 1,)
# With fpn=True torchvision returns its last two stages: features.13 and features.16, both at stride 32.
RETURNED_FEATURES = (STAGE_INDICES[-2], STAGE_INDICES[-1])
STRIDES = (32, 32)
CHANNELS = (160, 960)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of divisor, never more than 10% down."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _activation(x, hardswish: bool, name: str):
    """Hardswish (x * relu6(x + 3) / 6) or ReLU."""
    if hardswish:
        return keras.layers.Activation("hard_silu", name=name)(x)
    return keras.layers.ReLU(name=name)(x)


def _conv_bn_act(x, filters: int, kernel: int, stride: int, name: str, frozen_bn: bool, eps: float,
                 activation: str | None, depthwise: bool = False):
    """torchvision's Conv2dNormActivation: bias-free conv (padding (k - 1) // 2), norm, activation."""
    x = conv(x, filters, kernel, stride, f"{name}.0", depthwise=depthwise)
    x = norm_layer(f"{name}.1", frozen_bn, eps)(x)
    if activation is None:
        return x
    return _activation(x, activation == "hardswish", keras_name(f"{name}.2"))


def _squeeze_excitation(x, name: str):
    """torchvision's SqueezeExcitation with a hardsigmoid gate: x * hsig(fc2(relu(fc1(mean(x)))))."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=keras_name(f"{name}.avgpool"))(x)
    s = keras.layers.Conv2D(make_divisible(channels // 4), 1, name=keras_name(f"{name}.fc1"))(s)
    s = keras.layers.ReLU(name=keras_name(f"{name}.relu"))(s)
    s = keras.layers.Conv2D(channels, 1, name=keras_name(f"{name}.fc2"))(s)
    s = keras.layers.Activation("hard_sigmoid", name=keras_name(f"{name}.hardsigmoid"))(s)
    return keras.layers.Multiply(name=keras_name(f"{name}.scale"))([x, s])


def _inverted_residual(x, s: BlockSetting, name: str, frozen_bn: bool, eps: float):
    """torchvision's InvertedResidual: [expand 1x1] -> depthwise kxk (stride) -> [SE] -> project 1x1 (+ input)."""
    act = "hardswish" if s.hardswish else "relu"
    y, i = x, 0
    if s.expanded != s.in_channels:
        y = _conv_bn_act(y, s.expanded, 1, 1, f"{name}.block.{i}", frozen_bn, eps, act)
        i += 1
    y = _conv_bn_act(y, s.expanded, s.kernel, s.stride, f"{name}.block.{i}", frozen_bn, eps, act, depthwise=True)
    i += 1
    if s.use_se:
        y = _squeeze_excitation(y, f"{name}.block.{i}")
        i += 1
    y = _conv_bn_act(y, s.out_channels, 1, 1, f"{name}.block.{i}", frozen_bn, eps, None)
    if s.stride == 1 and s.in_channels == s.out_channels:
        y = keras.layers.Add(name=keras_name(f"{name}.add"))([y, x])
    return y


def tv_mobilenet_v3_large(*, frozen_bn: bool = True, trainable_layers: int = 6,
                          eps: float = TORCH_BN_EPS) -> keras.Model:
    """torchvision's mobilenet_v3_large features for Faster R-CNN: image -> [features.13, features.16].

    The detection builders pass their own norm layer (FrozenBatchNorm2d or BatchNorm2d), so eps is
    torch's default 1e-5 there, not the 0.001 of the classification model.
    """
    num_stages = len(STAGE_INDICES)
    if not 0 <= trainable_layers <= num_stages:
        raise ValueError(f"trainable_layers must be within [0, {num_stages}], got {trainable_layers}")
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_bn_act(inputs, LARGE[0].in_channels, 3, 2, "features.0", frozen_bn, eps, "hardswish")
    outputs = []
    for i, setting in enumerate(LARGE, start=1):
        x = _inverted_residual(x, setting, f"features.{i}", frozen_bn, eps)
        if i in RETURNED_FEATURES:
            outputs.append(x)
    x = _conv_bn_act(x, 6 * LARGE[-1].out_channels, 1, 1, f"features.{NUM_FEATURES - 1}", frozen_bn, eps,
                     "hardswish")
    outputs.append(x)
    model = keras.Model(inputs, outputs, name="mobilenet_v3_large_tv")
    freeze_before = NUM_FEATURES if trainable_layers == 0 else STAGE_INDICES[num_stages - trainable_layers]
    freeze_where(model, lambda path: int(path.split(".")[1]) < freeze_before)
    return model
