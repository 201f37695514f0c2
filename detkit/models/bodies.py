"""Bodies: image -> feature maps of increasing stride, finest first, with the pixel normalisation they expect.

Built without weights: a run's checkpoint, or `detkit.pretrained.initial_weights` for a new training run,
fills them. The single-level architecture takes one stride-16 map (and, for the ResNets' C4 head, the conv5
stage as a tail); the fpn architecture takes several maps of a body.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras

from detkit.errors import ConfigError
from detkit.models import tv_mobilenet_v3, tv_resnet

STRIDE = 16

# keras.applications constructor, stride-16 output layer, normalisation, has a conv5 tail.
APPLICATIONS = {
    "vgg16": ("VGG16", "block5_conv3", "caffe", False),
    "resnet50": ("ResNet50", "conv4_block6_out", "caffe", True),
    "resnet101": ("ResNet101", "conv4_block23_out", "caffe", True),
    "mobilenet_v2": ("MobileNetV2", "block_13_expand_relu", "tf", False),
}
TV_BODIES = ("resnet50_tv", "resnet101_tv", "mobilenet_v3_large_tv")
# small_resnet's stages with strides 4, 8, 16: the maps it gives the fpn architecture.
SMALL_RESNET_PYRAMID_STAGES = (2, 3, 4)


@dataclass
class Body:
    """The body model (image -> list of maps), their strides, its normalisation and, for C4 heads, a tail."""

    model: keras.Model
    strides: tuple[int, ...]
    normalization: str
    tail: Optional[keras.Model] = None


def _conv_bn_relu(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str,
                  relu: bool = True) -> keras.KerasTensor:
    """Conv (no bias) + BatchNorm (+ ReLU)."""
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    """A ResNet basic block: two 3x3 convs with an identity or projection shortcut."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn_relu(x, filters, 1, stride, f"{name}_proj", relu=False)
    y = _conv_bn_relu(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn_relu(y, filters, 3, 1, f"{name}_b", relu=False)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def small_resnet(widths: list[int], blocks: list[int]) -> keras.Model:
    """A light residual CNN (stride 16) that trains from scratch on a CPU in minutes."""
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv_bn_relu(inputs, widths[0], 3, 2, "stem")
    for b in range(blocks[0]):
        x = _basic_block(x, widths[0], 1, f"stage1_block{b + 1}")
    for stage in range(1, 4):
        for b in range(blocks[stage]):
            x = _basic_block(x, widths[stage], 2 if b == 0 else 1, f"stage{stage + 1}_block{b + 1}")
        if blocks[stage] == 0:
            x = _conv_bn_relu(x, widths[stage], 3, 2, f"stage{stage + 1}_down")
    return keras.Model(inputs, x, name="small_resnet")


def small_resnet_stage_output(blocks: list[int], stage: int) -> str:
    """The name of the layer that ends small_resnet's stage `stage` (1-4)."""
    n = blocks[stage - 1]
    return f"stage{stage}_block{n}_out" if n > 0 else f"stage{stage}_down_relu"


def application(name: str) -> keras.Model:
    """A keras.applications model without its classifier or weights."""
    ctor = getattr(keras.applications, APPLICATIONS[name][0])
    return ctor(include_top=False, weights=None, input_shape=(None, None, 3))


def tv_body(name: str, frozen_bn: bool, trainable_layers: int) -> tuple[keras.Model, tuple[int, ...]]:
    """A torchvision-layout body (resnet50_tv, resnet101_tv, mobilenet_v3_large_tv) and its strides."""
    if name == "mobilenet_v3_large_tv":
        model = tv_mobilenet_v3.tv_mobilenet_v3_large(frozen_bn=frozen_bn, trainable_layers=trainable_layers)
        return model, tv_mobilenet_v3.STRIDES
    depth = int(name[len("resnet"):-len("_tv")])
    return tv_resnet.tv_resnet(depth, frozen_bn=frozen_bn, trainable_layers=trainable_layers), tv_resnet.STRIDES


def tv_stages(name: str) -> int:
    """How many stages torchvision's trainable_layers counts for a torchvision-layout body."""
    return 6 if name == "mobilenet_v3_large_tv" else 5


def freeze(model: keras.Model, trainable: bool, fine_tune_from: str, freeze_batchnorm: bool) -> None:
    """Make the body non-trainable, or its layers before `fine_tune_from`, and (keeping their statistics) its
    BatchNormalization layers."""
    if not trainable:
        model.trainable = False
        return
    if fine_tune_from:
        names = [layer.name for layer in model.layers]
        if fine_tune_from not in names:
            raise ConfigError(f"config key model.base_network.fine_tune_from: no layer {fine_tune_from!r} in "
                              f"{model.name}")
        for layer in model.layers[: names.index(fine_tune_from)]:
            layer.trainable = False
    if freeze_batchnorm:
        # In Keras 3 a non-trainable BatchNormalization also runs in inference mode.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def single_level_body(name: str, small_widths: list[int], small_blocks: list[int], frozen_bn: bool,
                      trainable_layers: int, with_tail: bool) -> tuple[Body, keras.Model]:
    """The stride-16 body of `name` (with the conv5 tail when asked, for ResNets), and the whole network its
    layers belong to (what freezing applies to)."""
    if name in ("resnet50_tv", "resnet101_tv"):
        full, _ = tv_body(name, frozen_bn, trainable_layers)
        c4, c5 = full.outputs[2], full.outputs[3]
        tail = keras.Model(c4, c5, name=f"{name}_c5") if with_tail else None
        return Body(keras.Model(full.input, c4, name=f"{name}_c4"), (STRIDE,), "imagenet", tail), full
    if name == "small_resnet":
        full = small_resnet(small_widths, small_blocks)
        return Body(full, (STRIDE,), "tf"), full
    _, cut, normalization, has_tail = APPLICATIONS[name]
    full = application(name)
    cut_output = full.get_layer(cut).output
    features = keras.Model(full.input, cut_output, name=f"{name}_c4")
    tail = keras.Model(cut_output, full.output, name=f"{name}_c5") if has_tail and with_tail else None
    return Body(features, (STRIDE,), normalization, tail), full


def pyramid_body(name: str, small_widths: list[int], small_blocks: list[int], frozen_bn: bool,
                 trainable_layers: int, strides: tuple[int, ...] = ()) -> tuple[Body, keras.Model]:
    """The maps of body `name` for the fpn architecture (small_resnet: strides 4, 8, 16; the *_tv bodies:
    torchvision's), only those of `strides` when given, and the whole network."""
    if name == "small_resnet":
        full = small_resnet(small_widths, small_blocks)
        stages = [s for s in SMALL_RESNET_PYRAMID_STAGES if not strides or 2 ** s in strides]
        outputs = [full.get_layer(small_resnet_stage_output(small_blocks, s)).output for s in stages]
        model = keras.Model(full.input, outputs, name="small_resnet_pyramid")
        return Body(model, tuple(2 ** s for s in stages), "tf"), full
    full, all_strides = tv_body(name, frozen_bn, trainable_layers)
    if not strides or tuple(strides) == tuple(all_strides):
        return Body(full, tuple(all_strides), "imagenet"), full
    outputs = [o for o, s in zip(full.outputs, all_strides) if s in strides]
    return Body(keras.Model(full.input, outputs, name=f"{name}_pyramid"), tuple(strides), "imagenet"), full
