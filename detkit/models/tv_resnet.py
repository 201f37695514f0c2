"""ResNet-50/101 exactly as torchvision builds them (stride in the 3x3 conv), returning C2..C5."""
from __future__ import annotations

import keras

from detkit.models.tv_layers import conv, freeze_where, keras_name, norm_layer, symmetric_pad

# Bottleneck blocks per stage (layer1..layer4).
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STRIDES = (4, 8, 16, 32)
CHANNELS = (256, 512, 1024, 2048)
# torchvision's `trainable_layers` counts stages from the top: 5 means every layer trains.
_TRAIN_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


def _bottleneck(x, planes: int, stride: int, name: str, frozen_bn: bool):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), projection shortcut when the shape changes."""
    out_channels = planes * 4
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = conv(x, out_channels, 1, stride, f"{name}.downsample.0")
        shortcut = norm_layer(f"{name}.downsample.1", frozen_bn)(shortcut)
    y = conv(x, planes, 1, 1, f"{name}.conv1")
    y = norm_layer(f"{name}.bn1", frozen_bn)(y)
    y = keras.layers.ReLU(name=keras_name(f"{name}.relu1"))(y)
    y = conv(y, planes, 3, stride, f"{name}.conv2")
    y = norm_layer(f"{name}.bn2", frozen_bn)(y)
    y = keras.layers.ReLU(name=keras_name(f"{name}.relu2"))(y)
    y = conv(y, out_channels, 1, 1, f"{name}.conv3")
    y = norm_layer(f"{name}.bn3", frozen_bn)(y)
    y = keras.layers.Add(name=keras_name(f"{name}.add"))([y, shortcut])
    return keras.layers.ReLU(name=keras_name(name))(y)


def tv_resnet(depth: int = 50, *, frozen_bn: bool = True, trainable_layers: int = 5) -> keras.Model:
    """torchvision's resnet{depth} body: image -> [C2, C3, C4, C5] (strides 4..32, 256..2048 channels)."""
    if depth not in DEPTHS:
        raise ValueError(f"no torchvision ResNet of depth {depth}; choose from {sorted(DEPTHS)}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be within [0, 5], got {trainable_layers}")
    inputs = keras.Input((None, None, 3), name="image")
    x = conv(inputs, 64, 7, 2, "conv1", padding=3)
    x = norm_layer("bn1", frozen_bn)(x)
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals torch's -inf padding here: the inputs are post-ReLU, so never below 0.
    x = symmetric_pad(x, 1, "maxpool_pad")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    outputs = []
    for stage, blocks in enumerate(DEPTHS[depth]):
        planes = 64 * 2 ** stage
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            x = _bottleneck(x, planes, stride, f"layer{stage + 1}.{b}", frozen_bn)
        outputs.append(x)
    model = keras.Model(inputs, outputs, name=f"resnet{depth}_tv")
    train = set(_TRAIN_ORDER[:trainable_layers]) | ({"bn1"} if trainable_layers == 5 else set())
    freeze_where(model, lambda name: name.split(".")[0] not in train)
    return model
