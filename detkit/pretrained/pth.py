"""Read a PyTorch `.pth` state dict into numpy arrays without PyTorch and without running code from the file.

A `.pth` written by `torch.save` (PyTorch 1.6 and later) is a zip archive:
    NAME/data.pkl        a pickle of the state dict; each tensor is a call of torch._utils._rebuild_tensor_v2
                         on a persistent id ("storage", torch.FloatStorage, key, location, numel)
    NAME/data/KEY        the raw little-endian bytes of storage KEY
    NAME/byteorder       "little" or "big" (absent in older files: little)
Older files (the "legacy" format, e.g. torchvision's 2019 ResNet-50 FPN weights) are five pickles in a row
(magic number, protocol version, system info, the object, the storage keys) followed by each storage as an
int64 element count and its bytes.

Unpickling can call any importable function the file names, so the unpickler here resolves only the few
names a state dict needs (an OrderedDict, the tensor and parameter rebuild functions, the storage types) and
refuses every other one, naming it, before anything is called.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np

from detkit.errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_BFLOAT16: Any
try:  # TensorFlow depends on ml_dtypes, so it is there wherever detkit runs
    import ml_dtypes

    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BFLOAT16 = None

_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class _Sealed:
    """Objects the pickle may pass around but not change: a BUILD opcode on them is refused."""

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"the pickle tries to change a {type(self).__name__.strip('_').lower()} it was given")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """What `torch.FloatStorage` and the like resolve to: only their element type."""

    name: str
    dtype: Any


class _Storage(_Sealed):
    """A storage's elements, as a flat numpy array."""

    def __init__(self, data: np.ndarray):
        self.data = data


# A view may repeat elements (stride 0, as expand() saves), but not blow a storage up without bound.
MAX_VIEW_GROWTH = 16


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"tensor {what} is not a tuple of integers: {value!r:.80}")
    return value


@dataclass
class _Tensor(_Sealed):
    """A tensor as the pickle describes it; its storage's bytes may come later (legacy format)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        """The view of the storage the tensor describes, copied, after checking it stays inside the storage."""
        flat = self.storage.data
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, flat.dtype)
        count = int(np.prod(self.size, dtype=object))
        if count > MAX_VIEW_GROWTH * max(flat.size, 1 << 16):
            raise CheckpointError(f"a tensor of size {self.size} views a storage of {flat.size} elements")
        # as_strided reads whatever memory the strides reach: the last element must lie inside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:
            raise CheckpointError(f"a tensor of size {self.size}, stride {self.stride}, offset {self.offset} "
                                  f"reaches element {last} of a storage of {flat.size}")
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride), writeable=False)
        return np.array(view, copy=True)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> _Tensor:
    """torch._utils._rebuild_tensor_v2, checked: a storage, a non-negative offset, sizes and strides."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor without a storage")
    if not isinstance(offset, int) or offset < 0:
        raise CheckpointError(f"a tensor storage offset is not a non-negative integer: {offset!r:.80}")
    size, stride = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} do not describe a view")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> _Tensor:
    """torch._utils._rebuild_parameter: an nn.Parameter is its data here."""
    if not isinstance(data, _Tensor):
        raise CheckpointError("a parameter without tensor data")
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names of a state dict and loads storages through `load_storage`."""

    def __init__(self, file: BinaryIO, load_storage: Callable[[tuple], _Storage]):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            dtype = _STORAGE_DTYPES[name]
            if dtype is None:  # pragma: no cover
                raise CheckpointError(f"torch.{name} needs the ml_dtypes package (pip install ml_dtypes)")
            return _StorageType(name, dtype)
        raise CheckpointError(f"refused to load {module}.{name}: a state dict holds only tensors, storages and "
                              "ordered dicts, and this file names other code")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"unknown persistent id {pid!r:.80} (expected a tensor storage)")
        return self._load_storage(pid)


def _storage_fields(pid: tuple) -> tuple[_StorageType, str, int]:
    """(storage type, key, element count) of a ("storage", type, key, location, numel, ...) id."""
    if len(pid) < 5 or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int):
        raise CheckpointError(f"malformed storage id {pid!r:.80}")
    return pid[1], str(pid[2]), pid[4]


def _unpickle(data: bytes, load_storage: Callable[[tuple], _Storage], where: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), load_storage).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except Exception as exc:  # any malformed pickle is bad input, whatever the unpickler trips on
        raise CheckpointError(f"{where}: not a readable PyTorch pickle ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _read_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable zip archive ({exc})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (expected one NAME/data.pkl in the zip, "
                                  f"found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in archive.namelist():
            order = ">" if archive.read(prefix + "byteorder").strip() == b"big" else "<"
        cache: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            storage_type, key, numel = _storage_fields(pid)
            if key not in cache:
                entry = f"{prefix}data/{key}"
                try:
                    raw = archive.read(entry)
                except KeyError:
                    raise CheckpointError(f"storage {key} is missing ({entry} not in the archive)") from None
                dtype = storage_type.dtype.newbyteorder(order) if storage_type.dtype.itemsize > 1 else storage_type.dtype
                if len(raw) != numel * dtype.itemsize:
                    raise CheckpointError(f"storage {key} holds {len(raw)} bytes, expected {numel} x {dtype.itemsize}")
                cache[key] = _Storage(np.frombuffer(raw, dtype).astype(storage_type.dtype, copy=False))
            return cache[key]

        return _unpickle(archive.read(pickles[0]), load_storage, path)


def _read_legacy(path: str) -> Any:
    """The pre-1.6 format: header pickles, the object pickle, the key list, then each storage's bytes."""
    with open(path, "rb") as fh:
        data = fh.read()
    stream = io.BytesIO(data)

    def no_storage(pid: tuple) -> _Storage:
        raise CheckpointError("storage outside the object pickle")

    def next_pickle(load_storage: Callable[[tuple], _Storage]) -> Any:
        try:
            unpickler = _RestrictedUnpickler(stream, load_storage)
            return unpickler.load()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:  # any malformed pickle is bad input, whatever the unpickler trips on
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy "
                                  f"format: {type(exc).__name__})") from None

    if next_pickle(no_storage) != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
    if next_pickle(no_storage) != LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: unsupported legacy PyTorch protocol version")
    info = next_pickle(no_storage)
    order = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
    wanted: dict[str, tuple[_StorageType, int]] = {}
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
        storage_type, key, numel = _storage_fields(pid)
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(f"{path}: storage views (legacy view metadata) are not supported")
        wanted.setdefault(key, (storage_type, numel))
        return storages.setdefault(key, _Storage(np.zeros(0, storage_type.dtype)))

    obj = next_pickle(load_storage)
    keys = next_pickle(no_storage)
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: malformed legacy checkpoint (no storage key list)")
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{path}: truncated (storage {key} missing)")
        (numel,) = struct.unpack(order + "q", header)
        storage_type, expected = wanted.get(str(key), (None, None))
        if storage_type is None:
            raise CheckpointError(f"{path}: storage {key} is not used by any tensor")
        if numel != expected:
            raise CheckpointError(f"{path}: storage {key} holds {numel} elements, expected {expected}")
        dtype = storage_type.dtype
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise CheckpointError(f"{path}: truncated (storage {key})")
        file_dtype = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
        storages[str(key)].data = np.frombuffer(raw, file_dtype).astype(dtype, copy=False)
    missing = sorted(set(wanted) - {str(k) for k in keys})
    if missing:
        raise CheckpointError(f"{path}: storage {missing[0]} is missing")
    return obj


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` state dict (zip or legacy format) by name, as numpy arrays."""
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not is_zip and not _looks_like_pickle(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    obj = _read_zip(path) if is_zip else _read_legacy(path)
    return _tensors_of(obj, path)


def _looks_like_pickle(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(1) == b"\x80"
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _tensors_of(obj: Any, path: str) -> dict[str, np.ndarray]:
    """The name -> array items of a state dict (or of its "model"/"state_dict" entry, as training scripts save)."""
    if isinstance(obj, dict) and not any(isinstance(v, _Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _Tensor):
            raise CheckpointError(f"{path}: entry {key!r:.60} is not a named tensor")
        try:
            out[key] = value.to_numpy()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {key}: {exc}") from None
    if not out:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return out

