"""Write `.pth` files as torch.save does (zip and legacy formats) without PyTorch, for the reader's tests.

The pickle names torch's functions and storage types by module and name (GLOBAL opcodes) exactly as
torch.save writes them; nothing here imports or needs torch.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

STORAGE_TYPES = {
    np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage", np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage", np.dtype(np.bool_): "BoolStorage",
}


class Global:
    """A module.name reference, pickled as a GLOBAL opcode (callable, as save_reduce requires)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pragma: no cover - never called, only pickled
        raise AssertionError("a Global is only pickled")


@dataclass
class View:
    """A tensor viewing `storage` (a flat array) at `offset` with `size` and `stride` (in elements)."""

    storage: np.ndarray
    offset: int
    size: tuple
    stride: tuple
    key: Optional[str] = None
    storage_type: Optional[str] = None


class Call:
    """An object whose unpickling calls `func(*args)`."""

    def __init__(self, func: Global, args: tuple):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _Writer(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[str, tuple[np.ndarray, str]] = {}

    def save_global_ref(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[Global] = save_global_ref

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            self.storages[obj.key] = (obj.data, obj.type_name)
            pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.data.size)
            return pid + (None,) if self.legacy else pid
        return None


@dataclass
class _StorageRef:
    key: str
    data: np.ndarray
    type_name: str


def _tensor(view: View, key: str, parameter: bool) -> Call:
    storage = np.ascontiguousarray(view.storage).reshape(-1)
    ref = _StorageRef(view.key or key, storage, view.storage_type or STORAGE_TYPES[storage.dtype])
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                  (ref, view.offset, tuple(view.size), tuple(view.stride), False, collections.OrderedDict()))
    if parameter:
        return Call(Global("torch._utils", "_rebuild_parameter"), (tensor, True, collections.OrderedDict()))
    return tensor


def state_pickle(state: dict, legacy: bool = False, parameters: bool = False) -> tuple[bytes, dict]:
    """The pickle bytes of an OrderedDict state dict and its storages {key: (flat array, type name)}.

    Values: numpy arrays (each its own contiguous storage), View objects, dicts of them, or any object to pickle as is
    (e.g. a Call naming a function the reader must refuse).
    """
    counter = iter(range(10**6))

    def convert(value):
        if isinstance(value, dict):
            return collections.OrderedDict((k, convert(v)) for k, v in value.items())
        if isinstance(value, np.ndarray):
            value = np.require(value, requirements="C")
            value = View(value.reshape(-1), 0, value.shape, tuple(s // value.itemsize for s in value.strides))
        return _tensor(value, str(next(counter)), parameters) if isinstance(value, View) else value

    items = convert(state)
    buffer = io.BytesIO()
    writer = _Writer(buffer, legacy)
    writer.dump(items)
    return buffer.getvalue(), writer.storages


def write_pth(path: str, state: dict, archive: str = "archive", byteorder: Optional[str] = "little",
              parameters: bool = False) -> None:
    """A zip-format .pth as torch.save writes it (ARCHIVE/data.pkl, ARCHIVE/data/KEY, version, byteorder)."""
    data, storages = state_pickle(state, parameters=parameters)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", data)
        if byteorder:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for key, (flat, _) in storages.items():
            zf.writestr(f"{archive}/data/{key}", flat.astype(flat.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{archive}/version", "3\n")


def write_legacy_pth(path: str, state: dict) -> None:
    """A pre-1.6 (non-zip) .pth: magic, protocol, sys info, the object, sorted keys, then each storage."""
    data, storages = state_pickle(state, legacy=True)
    keys = sorted(storages)
    with open(path, "wb") as fh:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            fh.write(pickle.dumps(header, protocol=2))
        fh.write(data)
        fh.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            flat = storages[key][0]
            fh.write(struct.pack("<q", flat.size))
            fh.write(flat.astype(flat.dtype.newbyteorder("<")).tobytes())
