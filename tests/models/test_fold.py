"""BatchNorm folded into the convolution before it: hand-computed weights, whole bodies, what is left alone."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from detkit.models import bodies
from detkit.models.fold import FoldedConv, fold_batchnorm, foldable_pairs, folded_weights
from detkit.models.tv_layers import FrozenBatchNorm
from detkit.models.tv_mobilenet_v3 import tv_mobilenet_v3_large


def _randomise_norms(model: keras.Model, seed: int = 0) -> None:
    """Statistics and affine parameters away from the identity, so that a fold that drops them is seen."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = w.path.split("/")[-1]
        if name in ("running_var", "moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, w.shape))
        elif name in ("running_mean", "moving_mean", "bias", "beta"):
            w.assign(rng.normal(0.0, 0.1, w.shape))
        elif name in ("weight", "gamma"):
            w.assign(rng.uniform(0.5, 1.5, w.shape))


def test_folded_weights_by_hand():
    x = keras.Input((None, None, 2))
    conv = keras.layers.Conv2D(2, 1, use_bias=False)
    norm = FrozenBatchNorm(epsilon=0.0)
    keras.Model(x, norm(conv(x)))
    conv.kernel.assign(np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32))  # [1, 1, in 2, out 2]
    norm.weight.assign([2.0, 1.0])
    norm.bias.assign([1.0, -1.0])
    norm.running_mean.assign([0.5, 2.0])
    norm.running_var.assign([4.0, 1.0])
    # scale = weight / sqrt(var) = [1, 1]; shift = bias - mean * scale = [0.5, -3].
    kernel, bias = folded_weights(conv, norm)
    np.testing.assert_allclose(kernel.numpy(), [[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_allclose(bias.numpy(), [0.5, -3.0])
    norm.running_var.assign([16.0, 0.25])  # scale = [0.5, 2]
    kernel, bias = folded_weights(conv, norm)
    np.testing.assert_allclose(kernel.numpy(), [[[[0.5, 4.0], [1.5, 8.0]]]])
    np.testing.assert_allclose(bias.numpy(), [0.75, -5.0])


def test_depthwise_and_biased_conv_with_keras_batchnorm_by_hand():
    x = keras.Input((None, None, 2))
    dw = keras.layers.DepthwiseConv2D(1, depth_multiplier=2, use_bias=True)
    norm = keras.layers.BatchNormalization(epsilon=0.0)
    keras.Model(x, norm(dw(x)))
    dw.kernel.assign(np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32))  # outputs in0*1, in0*2, in1*3, in1*4
    dw.bias.assign([1.0, 1.0, 1.0, 1.0])
    norm.gamma.assign([1.0, 2.0, 3.0, 4.0])
    norm.beta.assign([0.0, 0.0, 0.0, 1.0])
    norm.moving_mean.assign([1.0, 0.0, 0.0, 0.0])
    norm.moving_variance.assign([1.0, 4.0, 9.0, 16.0])  # scale = gamma / sqrt(var) = [1, 1, 1, 1]
    kernel, bias = folded_weights(dw, norm)
    np.testing.assert_allclose(kernel.numpy(), [[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_allclose(bias.numpy(), [0.0, 1.0, 1.0, 2.0])  # beta - mean * s + conv bias * s


@pytest.mark.parametrize("make", [
    lambda: tv_mobilenet_v3_large(),
    lambda: bodies.small_resnet([8, 16, 24, 32], [1, 1, 1, 1]),
    lambda: bodies.application("mobilenet_v2"),
], ids=["mobilenet_v3_tv", "small_resnet", "keras_mobilenet_v2"])
def test_folded_body_equals_the_original_in_inference(make):
    model = make()
    _randomise_norms(model)
    folded = fold_batchnorm(model)
    norms = [layer for layer in model.layers
             if isinstance(layer, (FrozenBatchNorm, keras.layers.BatchNormalization))]
    assert len(foldable_pairs(model)) == len(norms)  # every norm in these bodies follows a conv
    assert not any(isinstance(layer, (FrozenBatchNorm, keras.layers.BatchNormalization))
                   for layer in folded.layers)
    x = tf.constant(np.random.default_rng(1).normal(0, 1, (1, 67, 95, 3)), tf.float32)
    want = keras.tree.flatten(model(x, training=False))
    got = keras.tree.flatten(folded(x, training=False))
    assert len(got) == len(want)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-4 * float(tf.reduce_max(tf.abs(a))))


def test_folded_model_follows_the_original_weights():
    x = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    norm = FrozenBatchNorm()
    model = keras.Model(x, keras.layers.ReLU()(norm(conv(x))))
    folded = fold_batchnorm(model)
    assert folded.weights == []  # no copies: the original variables are read at every call
    image = np.random.default_rng(0).normal(0, 1, (1, 5, 6, 3)).astype(np.float32)
    norm.running_mean.assign([0.3, -0.2, 0.1, 0.0])
    conv.kernel.assign(conv.kernel * 2.0)
    np.testing.assert_allclose(folded(image).numpy(), model(image).numpy(), atol=1e-5)


def test_what_is_not_folded():
    x = keras.Input((None, None, 3))
    shared_out = keras.layers.Conv2D(4, 1, use_bias=False, name="two_users")(x)
    a = keras.layers.BatchNormalization(name="bn_a")(shared_out)
    b = keras.layers.ReLU(name="relu_b")(shared_out)
    activated = keras.layers.Conv2D(4, 1, activation="relu", name="activated")(x)
    c = keras.layers.BatchNormalization(name="bn_c")(activated)
    plain = keras.layers.Conv2D(4, 1, name="plain")(x)
    d = keras.layers.BatchNormalization(name="bn_d")(plain)
    model = keras.Model(x, [a, b, c, d])
    assert set(foldable_pairs(model)) == {"plain"}
    folded = fold_batchnorm(model)
    assert isinstance(folded.get_layer("plain"), FoldedConv)
    assert folded.get_layer("two_users") is model.get_layer("two_users")
    assert folded.get_layer("bn_a") is model.get_layer("bn_a")


def test_mixed_precision_folds_in_float32_and_keeps_the_policy():
    # Only symbolic: oneDNN's bfloat16 convolution needs AVX-512 BF16, which the suite's oneDNN cap turns off.
    x = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, dtype="mixed_bfloat16", name="conv")
    norm = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    model = keras.Model(x, norm(conv(x)))
    folded = fold_batchnorm(model)
    layer = folded.get_layer("conv")
    assert isinstance(layer, FoldedConv) and layer.compute_dtype == "bfloat16"
    assert [t.dtype for t in folded_weights(conv, norm)] == [tf.float32, tf.float32]
    assert folded.outputs[0].dtype == model.outputs[0].dtype == "bfloat16"


def test_unfolded_gives_the_model_itself_inside_and_the_folded_form_outside():
    from detkit.models.fold import inference_form, unfolded

    model = bodies.small_resnet([8, 8, 8, 8], [1, 1, 1, 1])
    with unfolded():
        assert inference_form(model) is model
        with unfolded():
            pass
        assert inference_form(model) is model  # a nested scope leaves the outer one on
    folded = inference_form(model)
    assert folded is not model and any(isinstance(layer, FoldedConv) for layer in folded.layers)
    assert inference_form(model) is folded  # made once
