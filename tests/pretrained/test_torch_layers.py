"""torch state dict <-> Keras conversion on a small synthetic model (no torch needed)."""
import keras
import numpy as np
import pytest

from detkit.errors import CheckpointError, StateDictError
from detkit.models.tv_layers import FrozenBatchNorm
from detkit.pretrained.torch_layers import expected_torch_shapes, load_torch_state, torch_state


class Net:
    """conv (bias) -> depthwise (x2) -> BN -> FrozenBN -> dense, and its table of torch module paths."""

    def __init__(self):
        inputs = keras.Input((5, 5, 2))
        self.layers = {"conv": keras.layers.Conv2D(3, 3, padding="same", name="c"),
                       "dw": keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False),
                       "bn": keras.layers.BatchNormalization(), "fbn": FrozenBatchNorm(),
                       "head.fc": keras.layers.Dense(4)}
        x = inputs
        for key in ("conv", "dw", "bn", "fbn"):
            x = self.layers[key](x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        self.model = keras.Model(inputs, self.layers["head.fc"](x))


def _model() -> dict:
    """The table of a new Net."""
    return Net().layers


def _state() -> dict[str, np.ndarray]:
    """A torch-layout state dict for _model(), random values."""
    rng = np.random.default_rng(0)
    shapes = {"conv.weight": (3, 2, 3, 3), "conv.bias": (3,), "dw.weight": (6, 1, 3, 3),
              "bn.weight": (6,), "bn.bias": (6,), "bn.running_mean": (6,), "bn.running_var": (6,),
              "fbn.weight": (6,), "fbn.bias": (6,), "fbn.running_mean": (6,), "fbn.running_var": (6,),
              "head.fc.weight": (4, 6), "head.fc.bias": (4,)}
    state = {f"net.{k}": rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in shapes.items()}
    state["net.bn.num_batches_tracked"] = np.array(7)
    return state


def test_expected_shapes_follow_the_table_and_the_prefix():
    assert expected_torch_shapes(_model(), "net.")["net.dw.weight"] == (6, 1, 3, 3)


def test_load_transposes_each_kind_of_layer():
    layers, state = _model(), _state()
    assert load_torch_state(layers, state, "net.") == []
    conv = state["net.conv.weight"]
    kernel = layers["conv"].kernel.numpy()
    assert kernel.shape == (3, 3, 2, 3)
    assert kernel[0, 2, 1, 2] == conv[2, 1, 0, 2]  # (kh, kw, in, out) <- (out, in, kh, kw)
    np.testing.assert_array_equal(layers["conv"].bias.numpy(), state["net.conv.bias"])
    dw = state["net.dw.weight"]
    depthwise = layers["dw"].kernel.numpy()
    assert depthwise.shape == (3, 3, 3, 2)
    assert depthwise[1, 0, 1, 1] == dw[1 * 2 + 1, 0, 1, 0]  # torch channel c * multiplier + j, not j * C + c
    assert depthwise[1, 0, 1, 1] != dw[1 * 3 + 1, 0, 1, 0]
    bn = layers["bn"]
    np.testing.assert_array_equal(bn.gamma.numpy(), state["net.bn.weight"])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["net.bn.running_var"])
    np.testing.assert_array_equal(layers["fbn"].running_mean.numpy(), state["net.fbn.running_mean"])
    np.testing.assert_array_equal(layers["head.fc"].kernel.numpy(), state["net.head.fc.weight"].T)


def test_loaded_conv_is_torch_cross_correlation():
    """A 3x3 'valid' conv on a 3x3 input is sum(x * w[o, i]) with no flip, as torch computes it."""
    inputs = keras.Input((3, 3, 2))
    layer = keras.layers.Conv2D(1, 3, use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    w = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    load_torch_state({"conv": layer}, {"conv.weight": w})
    x = np.arange(18, dtype=np.float32).reshape(2, 3, 3)  # torch CHW
    expected = float(np.sum(x * w[0]))
    assert float(model(x.transpose(1, 2, 0)[None]).numpy().squeeze()) == pytest.approx(expected)


def test_round_trip_gives_the_same_state_dict():
    state = _state()
    model = _model()
    load_torch_state(model, state, "net.")
    back = torch_state(model, "net.")
    assert sorted(back) == sorted(k for k in state if not k.endswith("num_batches_tracked"))
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key])


def test_missing_key_is_one_line_naming_the_key_and_shape():
    state = _state()
    del state["net.dw.weight"]
    with pytest.raises(CheckpointError) as err:
        load_torch_state(_model(), state, "net.")
    assert str(err.value) == "state dict has no key net.dw.weight (expected shape (6, 1, 3, 3))"


def test_wrong_shape_names_key_found_and_expected_and_assigns_nothing():
    state = _state()
    state["net.head.fc.weight"] = np.zeros((4, 7), np.float32)
    model = _model()
    before = torch_state(model)
    with pytest.raises(StateDictError) as err:
        load_torch_state(model, state, "net.")
    assert str(err.value) == "state dict key net.head.fc.weight: shape (4, 7) does not fit, expected (4, 6)"
    assert "\n" not in str(err.value)
    for key, value in torch_state(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_unused_keys_under_the_prefix_raise_or_are_returned():
    state = _state()
    state["net.extra.weight"] = np.zeros((2,), np.float32)
    state["net.other.bias"] = np.zeros((3,), np.float32)
    state["elsewhere.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(StateDictError, match=r"^state dict key net.extra.weight \(shape \(2,\)\) is not used "
                                             r"by the model \(and 1 more\)$"):
        load_torch_state(_model(), state, "net.")
    assert load_torch_state(_model(), state, "net.", allow_unused=True) == ["net.extra.weight", "net.other.bias"]

