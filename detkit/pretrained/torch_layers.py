"""torch state dict <-> Keras weights, through a table of torch module paths -> Keras layers.

A table maps each module path ("layer1.0.conv1") to the weight-owning Keras layer that holds its tensors, or
to a function giving that layer's `TorchParam`s when its layout differs from the standard one. Conv2D,
DepthwiseConv2D, Dense, BatchNormalization and FrozenBatchNorm are converted here. The tables of torchvision's
detectors are in detkit/pretrained/torchvision.py: detkit/models/ knows nothing of torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

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


ModuleTable = Mapping[str, "keras.layers.Layer | Callable[[], list[TorchParam]]"]


def torch_params(layer: keras.layers.Layer) -> list[TorchParam]:
    """The torch tensors of one weight-owning layer, in torch's key order."""
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
        raise TypeError(f"layer {layer.name} ({type(layer).__name__}) has no torch conversion")
    if getattr(layer, "use_bias", False):
        params.append(TorchParam("bias", layer.bias))
    return params


def _params_by_key(modules: ModuleTable, prefix: str) -> dict[str, TorchParam]:
    """Every state-dict key the table needs, with its parameter."""
    out = {}
    for path, entry in modules.items():
        params = entry() if callable(entry) and not isinstance(entry, keras.layers.Layer) else torch_params(entry)
        out.update({f"{prefix}{path}.{p.suffix}": p for p in params})
    return out


def expected_torch_shapes(modules: ModuleTable, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape (torch layout) for every tensor the table's layers would read."""
    return {key: p.torch_shape() for key, p in _params_by_key(modules, prefix).items()}


def load_torch_state(modules: ModuleTable, state: Mapping[str, np.ndarray], prefix: str = "", *,
                     allow_unused: bool = False) -> list[str]:
    """Assign `state[prefix + path + suffix]` to every layer of the table; return the unused keys under `prefix`.

    Nothing is assigned unless every key is present with the right shape. Unused keys under `prefix`
    (other than num_batches_tracked) raise StateDictError unless `allow_unused`.
    """
    params = _params_by_key(modules, prefix)
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


def torch_state(modules: ModuleTable, prefix: str = "") -> dict[str, np.ndarray]:
    """The table's weights as a torch-layout state dict (the reverse of load_torch_state)."""
    return {key: np.ascontiguousarray(p.to_torch(keras.ops.convert_to_numpy(p.variable)))
            for key, p in _params_by_key(modules, prefix).items()}
