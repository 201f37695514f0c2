"""The .pth reader: tensors back with their dtypes, shapes and strides; anything but a state dict refused unrun."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
from pretrained.pth_writer import Call, Global, View, state_pickle, write_legacy_pth, write_pth

from detkit.errors import CheckpointError
from detkit.pretrained.pth import read_state_dict


def _state() -> dict:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": np.arange(4, dtype=np.float32) - 1.5,
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "ids": np.array([[1, -2, 3], [2**40, 5, 6]], dtype=np.int64),
        "half": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
        "double": np.array([1e-300, 3.0]),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
    }


@pytest.mark.parametrize("archive", ["archive", "fasterrcnn_resnet50_fpn_coco-258fb6c6"])
def test_zip_round_trip_keeps_values_dtypes_and_order(tmp_path, archive):
    path = str(tmp_path / "m.pth")
    state = _state()
    write_pth(path, state, archive=archive)
    out = read_state_dict(path)
    assert list(out) == list(state)
    for name, value in state.items():
        assert out[name].dtype == value.dtype, name
        assert out[name].shape == value.shape, name
        np.testing.assert_array_equal(out[name], value)


def test_views_with_offsets_and_non_trivial_strides(tmp_path):
    flat = np.arange(30, dtype=np.float32)
    longs = np.arange(12, dtype=np.int64) * 10
    state = {
        # a transpose of a 3x4 block starting at element 5: element [i, j] = flat[5 + j*4 + i]
        "transposed": View(flat, 5, (4, 3), (1, 4), key="shared"),
        # every other element of the same storage, from element 1
        "strided": View(flat, 1, (5,), (2,), key="shared"),
        # a broadcast row (stride 0), as expand() saves
        "expanded": View(longs, 3, (2, 4), (0, 1), key="longs"),
    }
    path = str(tmp_path / "views.pth")
    write_pth(path, state)
    with zipfile.ZipFile(path) as zf:  # one storage shared by two tensors, as torch writes views
        assert sorted(n for n in zf.namelist() if "/data/" in n) == ["archive/data/longs", "archive/data/shared"]
    out = read_state_dict(path)
    np.testing.assert_array_equal(out["transposed"], flat[5:17].reshape(3, 4).T)
    np.testing.assert_array_equal(out["strided"], [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(out["expanded"], [[30, 40, 50, 60], [30, 40, 50, 60]])
    assert out["transposed"].dtype == np.float32 and out["expanded"].dtype == np.int64
    out["strided"][0] = 100  # copies, not views of one buffer
    assert out["transposed"][0, 0] == 5


def test_bfloat16_and_parameters(tmp_path):
    # bfloat16 is the top half of a float32: 1.5 = 0x3FC0, -2.0 = 0xC000
    bits = np.array([0x3FC0, 0xC000], dtype=np.uint16)
    path = str(tmp_path / "bf16.pth")
    write_pth(path, {"w": View(bits, 0, (2,), (1,), storage_type="BFloat16Storage")}, parameters=True)
    out = read_state_dict(path)
    assert out["w"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(out["w"].astype(np.float32), [1.5, -2.0])


def test_big_endian_storages(tmp_path):
    path = str(tmp_path / "be.pth")
    value = np.array([1.25, -3.0], np.float32)
    write_pth(path, {"w": value}, byteorder=None)
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries["archive/data/0"] = value.astype(">f4").tobytes()
    entries["archive/byteorder"] = b"big"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    np.testing.assert_array_equal(read_state_dict(path)["w"], value)


def test_legacy_format(tmp_path):
    path = str(tmp_path / "legacy.pth")
    state = _state()
    state["view"] = View(np.arange(6, dtype=np.float32), 1, (2, 2), (1, 2), key="v")
    write_legacy_pth(path, state)
    out = read_state_dict(path)
    np.testing.assert_array_equal(out["conv.weight"], state["conv.weight"])
    np.testing.assert_array_equal(out["ids"], state["ids"])
    np.testing.assert_array_equal(out["view"], [[1, 3], [2, 4]])


def test_state_dict_under_a_model_key(tmp_path):
    path = str(tmp_path / "nested.pth")
    write_pth(path, {"model": {"w": np.ones(2, np.float32)}, "epoch": 3})
    out = read_state_dict(path)
    assert list(out) == ["w"]
    np.testing.assert_array_equal(out["w"], [1, 1])


def _system_call(marker: str) -> Call:
    return Call(Global("os", "system"), (f"touch {marker}",))


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("subprocess", "check_call"), ("torch.storage", "_load_from_bytes"),
                                         ("torch", "load")])
def test_refuses_any_other_callable_without_running_it(tmp_path, module, name):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    command = f"touch {marker}"
    write_pth(path, {"ok": np.ones(2, np.float32), "evil": Call(Global(module, name), (command,))})
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"refused to load {module}.{name}" in message and path in message
    assert "\n" not in message
    assert not marker.exists()


def test_refuses_a_system_call_hidden_in_a_storage_type_and_in_the_legacy_format(tmp_path):
    marker = tmp_path / "pwned"
    evil = View(np.ones(2, np.float32), 0, (2,), (1,), storage_type="FloatStorage")
    path = str(tmp_path / "evil_storage.pth")
    write_pth(path, {"w": evil})
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries["archive/data.pkl"] = entries["archive/data.pkl"].replace(b"torch\nFloatStorage\n", b"os\nsystem\n")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match="refused to load os.system"):
        read_state_dict(path)
    legacy = str(tmp_path / "evil_legacy.pth")
    write_legacy_pth(legacy, {"w": np.ones(2, np.float32), "x": _system_call(marker)})
    with pytest.raises(CheckpointError, match="refused to load os.system"):
        read_state_dict(legacy)
    assert not marker.exists()


def test_plain_pickle_of_a_system_call_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "plain.pth"
    path.write_bytes(b"\x80\x02cos\nsystem\n(X" + f"touch {marker}".encode() + b"\ntR.")
    with pytest.raises(CheckpointError, match="refused to load os.system"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_view_past_the_end_of_its_storage_is_refused(tmp_path):
    path = str(tmp_path / "oob.pth")
    write_pth(path, {"w": View(np.arange(6, dtype=np.float32), 2, (3, 2), (2, 1))})
    with pytest.raises(CheckpointError, match=r"w: a tensor of size \(3, 2\), stride \(2, 1\), offset 2 reaches "
                                              r"element 7 of a storage of 6"):
        read_state_dict(path)


@pytest.mark.parametrize("content,expected", [
    (b"", "neither a zip archive nor a pickle"),
    (b"hello world", "neither a zip archive nor a pickle"),
    (pickle.dumps([1, 2], protocol=2), "neither a zip archive nor the legacy format"),
])
def test_not_a_checkpoint(tmp_path, content, expected):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_state_dict(str(path))


def test_zip_without_data_pkl_missing_storage_and_non_tensor_entries(tmp_path):
    path = str(tmp_path / "a.zip")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/other.txt", "x")
    with pytest.raises(CheckpointError, match="expected one NAME/data.pkl"):
        read_state_dict(path)
    write_pth(path, {"w": np.ones(3, np.float32)})
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/data/0")}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match="storage 0 is missing"):
        read_state_dict(path)
    write_pth(path, {"w": np.ones(3, np.float32), "step": 5})
    with pytest.raises(CheckpointError, match="entry 'step' is not a named tensor"):
        read_state_dict(path)


def test_a_build_opcode_cannot_change_a_checked_tensor(tmp_path):
    # BUILD on the rebuilt tensor would swap its checked stride for one reading outside the storage.
    path = tmp_path / "build.pth"
    write_pth(str(path), {"w": np.arange(4, dtype=np.float32)})
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    data = entries["archive/data.pkl"]
    assert data.count(b"R") >= 2
    # ... REDUCE (rebuild) then BUILD {"stride": (-1000,)} before it is stored in the dict
    tail = data.rindex(b"R")
    patched = data[:tail + 1] + b"}X\x06\x00\x00\x00strideJ\x18\xfc\xff\xff\x85sb" + data[tail + 1:]
    entries["archive/data.pkl"] = patched
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    with pytest.raises(CheckpointError, match="the pickle tries to change a tensor it was given"):
        read_state_dict(str(path))


def test_a_view_far_larger_than_its_storage_is_refused(tmp_path):
    path = str(tmp_path / "huge.pth")
    write_pth(path, {"w": View(np.ones(2, np.float32), 0, (10**6, 10**6), (0, 0))})
    with pytest.raises(CheckpointError, match=r"a tensor of size \(1000000, 1000000\) views a storage of 2 elements"):
        read_state_dict(path)
