"""torch state dict <-> Keras weights, for layers tagged with their torch module path (`layer.torch_name`).

A weight-owning layer carries `torch_name` ("layer1.0.conv1"); a container layer or model may carry
`torch_prefix` ("backbone.body.") that is put before the names of the layers inside it. Conv2D,
DepthwiseConv2D, Dense, BatchNormalization and FrozenBatchNorm are converted here; any other layer can
define `torch_params() -> list[TorchParam]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import keras
import numpy as np

from detkit.errors import StateDictError
from detkit.models.tv_layers import FrozenBatchNorm

# Buffers torch keeps that have no Keras counterpart.
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _same(a: np.ndarray) -> np.ndarray:
    """Identity layout change."""
    return a


@dataclass(frozen=True)
class TorchParam:
    """One torch tensor of a layer: its key suffix, the Keras variable, and the layout changes both ways."""

    suffix: str
    variable: keras.Variable
    to_keras: Callable[[np.ndarray], np.ndarray] = _same
    to_torch: Callable[[np.ndarray], np.ndarray] = _same

    def torch_shape(self) -> tuple[int, ...]:
        """The shape this tensor has in the torch state dict."""
        return tuple(self.to_torch(np.zeros(self.variable.shape, np.float32)).shape)


def _conv_kernel(layer) -> TorchParam:
    """(O, I/groups, kh, kw) <-> (kh, kw, I/groups, O)."""
    return TorchParam("weight", layer.kernel, lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))


def _depthwise_kernel(layer) -> TorchParam:
    """(C * m, 1, kh, kw) <-> (kh, kw, C, m): torch's output channel c * m + j is Keras' [..., c, j]."""
    kh, kw, c, m = layer.kernel.shape
    return TorchParam("weight", layer.kernel,
                      lambda w: w.reshape(c, m, kh, kw).transpose(2, 3, 0, 1),
                      lambda k: k.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw))


def torch_params(layer: keras.layers.Layer) -> list[TorchParam]:
    """The torch tensors of one weight-owning layer, in torch's key order."""
    if hasattr(layer, "torch_params"):
        return list(layer.torch_params())
    if not layer.built:
        raise ValueError(f"layer {layer.name} is not built: call the model once before converting weights")
    params: list[TorchParam] = []
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        params.append(_depthwise_kernel(layer))
    elif isinstance(layer, keras.layers.Conv2D):
        params.append(_conv_kernel(layer))
    elif isinstance(layer, keras.layers.Dense):
        params.append(TorchParam("weight", layer.kernel, lambda w: w.T, lambda k: k.T))
    elif isinstance(layer, keras.layers.BatchNormalization):
        if layer.scale:
            params.append(TorchParam("weight", layer.gamma))
        if layer.center:
            params.append(TorchParam("bias", layer.beta))
        params += [TorchParam("running_mean", layer.moving_mean), TorchParam("running_var", layer.moving_variance)]
        return params
    elif isinstance(layer, FrozenBatchNorm):
        return [TorchParam(s, getattr(layer, s)) for s in ("weight", "bias", "running_mean", "running_var")]
    else:
        raise TypeError(f"layer {layer.name} ({type(layer).__name__}) has a torch_name but no torch conversion")
    if getattr(layer, "use_bias", False):
        params.append(TorchParam("bias", layer.bias))
    return params


def _children(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Direct sub-layers of a model or layer (Keras tracks them for both)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _walk(layer: keras.layers.Layer, prefix: str, seen: set[int]) -> Iterator[tuple[str, keras.layers.Layer]]:
    """(full torch name, layer) for every tagged layer under `layer`, each once."""
    if id(layer) in seen:
        return
    seen.add(id(layer))
    name = getattr(layer, "torch_name", None)
    if name is not None:
        yield prefix + name, layer
        return
    inner = prefix + getattr(layer, "torch_prefix", "")
    for child in _children(layer):
        yield from _walk(child, inner, seen)


def torch_named_layers(model: keras.layers.Layer) -> dict[str, keras.layers.Layer]:
    """Every layer of `model` (nested ones included) that has a torch name, by full torch module path."""
    found: dict[str, keras.layers.Layer] = {}
    for name, layer in _walk(model, "", set()):
        if name in found:
            raise ValueError(f"two layers carry the torch name {name}: {found[name].name} and {layer.name}")
        found[name] = layer
    return found


def _params_by_key(model: keras.layers.Layer, prefix: str) -> dict[str, TorchParam]:
    """Every state-dict key the model needs, with its parameter."""
    return {f"{prefix}{name}.{p.suffix}": p
            for name, layer in torch_named_layers(model).items() for p in torch_params(layer)}


def expected_torch_shapes(model: keras.layers.Layer, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape (torch layout) for every tensor the model would read."""
    return {key: p.torch_shape() for key, p in _params_by_key(model, prefix).items()}


def load_torch_state(model: keras.layers.Layer, state: Mapping[str, np.ndarray], prefix: str = "", *,
                     allow_unused: bool = False) -> list[str]:
    """Assign `state[prefix + torch_name + suffix]` to every tagged layer; return the unused keys under `prefix`.

    Nothing is assigned unless every key is present with the right shape. Unused keys under `prefix`
    (other than num_batches_tracked) raise StateDictError unless `allow_unused`.
    """
    params = _params_by_key(model, prefix)
    converted = []
    for key, p in params.items():
        expected = p.torch_shape()
        if key not in state:
            raise StateDictError(f"state dict has no key {key} (expected shape {expected})")
        value = np.asarray(state[key])
        if tuple(value.shape) != expected:
            raise StateDictError(f"state dict key {key}: shape {tuple(value.shape)} does not fit, expected {expected}")
        converted.append((p.variable, p.to_keras(value).astype(p.variable.dtype)))
    unused = sorted(k for k in state if k.startswith(prefix) and k not in params
                    and not k.endswith(_IGNORED_SUFFIXES))
    if unused and not allow_unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise StateDictError(f"state dict key {unused[0]} (shape {tuple(np.shape(state[unused[0]]))}) "
                             f"is not used by the model{more}")
    for variable, value in converted:
        variable.assign(value)
    return unused


def torch_state(model: keras.layers.Layer, prefix: str = "") -> dict[str, np.ndarray]:
    """The model's tagged weights as a torch-layout state dict (the reverse of load_torch_state)."""
    return {key: np.ascontiguousarray(p.to_torch(keras.ops.convert_to_numpy(p.variable)))
            for key, p in _params_by_key(model, prefix).items()}
