"""checkpoint import: class names, the run directory it writes, and what it refuses to overwrite."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import numpy as np
import pytest
from pretrained import tiny_torchvision
from pretrained.pth_writer import write_pth

from detkit.errors import CheckpointError
from detkit.pretrained.classes import COCO_CLASSES, UNUSED_CLASS, resolve_class_names
from detkit.pretrained.importer import import_checkpoint, upgrade_old_torchvision_keys
from detkit.runs.layout import IMPORT_RECORD_FILE as IMPORT_RECORD
from detkit.runs.lock import RunLocked


@pytest.fixture
def tiny(monkeypatch):
    return tiny_torchvision.install(monkeypatch)


def test_coco_names_are_torchvisions_slots():
    assert len(COCO_CLASSES) == 90
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[17] == "dog" and COCO_CLASSES[-1] == "toothbrush"
    # the ten COCO category ids that no class uses
    assert [i + 1 for i, n in enumerate(COCO_CLASSES) if n == UNUSED_CLASS] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_class_names_from_every_kind_of_spec(tmp_path):
    assert resolve_class_names(None, 90, "m.pth") == list(COCO_CLASSES)
    assert resolve_class_names("coco", 90, "m.pth") == list(COCO_CLASSES)
    assert resolve_class_names("raccoon, dog", 2, "m.pth") == ["raccoon", "dog"]
    assert resolve_class_names("raccoon", 1, "m.pth") == ["raccoon"]
    lines = tmp_path / "names.txt"
    lines.write_text("cat\n\ndog\n")
    assert resolve_class_names(str(lines), 2, "m.pth") == ["cat", "dog"]
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps(["a", "b", "c"]))
    assert resolve_class_names(str(listed), 3, "m.pth") == ["a", "b", "c"]


@pytest.mark.parametrize("spec,count,message", [
    (None, 3, "m.pth: the checkpoint has 3 classes (not COCO's 90); name them with --classes"),
    ("coco", 3, "--classes coco: 90 names for a checkpoint with 3 classes"),
    ("a,b", 3, "--classes a,b: 2 names for a checkpoint with 3 classes"),
    ("a,a,b", 3, "--classes a,a,b: duplicate class name 'a'"),
    ("a,,b", 3, "--classes a,,b: class 2 has an empty name"),
    ("nosuchfile", 3, "--classes nosuchfile: no such file, and not coco or a comma-separated list"),
])
def test_class_spec_errors(spec, count, message):
    with pytest.raises(CheckpointError) as info:
        resolve_class_names(spec, count, "m.pth")
    assert str(info.value).startswith(message)


def test_import_writes_a_run_that_predict_loads(tmp_path, tiny):
    pth = str(tmp_path / "tiny-coco.pth")
    write_pth(pth, tiny_torchvision.tiny_state(90))
    out = str(tmp_path / "runs" / "imported")
    assert import_checkpoint(pth, out) == out
    assert sorted(os.listdir(out)) == ["checkpoints", "classes.json", "config.yml", IMPORT_RECORD]
    assert json.load(open(os.path.join(out, "classes.json"))) == list(COCO_CLASSES)
    record = json.load(open(os.path.join(out, IMPORT_RECORD)))
    assert record["arch"] == "tiny" and record["source"] == "tiny-coco.pth" and len(record["sha256"]) == 64
    assert not [n for n in os.listdir(tmp_path / "runs") if n.startswith(".")]  # no staging left

    from detkit.inference.detector import Detector

    detector = Detector.from_checkpoint(out)
    assert detector.config.model.base_network.name == "small_resnet"
    assert detector.class_names == list(COCO_CLASSES)
    np.testing.assert_allclose(detector.model.rcnn_head.cls.bias.numpy(), np.arange(91) / 100, rtol=1e-6)


def test_import_with_own_classes_and_arch(tmp_path, tiny):
    pth = str(tmp_path / "mine.pth")
    write_pth(pth, tiny_torchvision.tiny_state(2))
    out = str(tmp_path / "mine")
    import_checkpoint(pth, out, arch="tiny", classes="raccoon,dog")
    assert json.load(open(os.path.join(out, "classes.json"))) == ["raccoon", "dog"]
    with pytest.raises(CheckpointError, match="--arch resnet: unknown \\(choose from tiny\\)"):
        import_checkpoint(pth, str(tmp_path / "other"), arch="resnet", classes="raccoon,dog")
    assert not (tmp_path / "other").exists()


def test_import_refuses_outputs_it_did_not_make(tmp_path, tiny):
    pth = str(tmp_path / "tiny.pth")
    write_pth(pth, tiny_torchvision.tiny_state(90))
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.yml").write_text("train: {}\n")
    with pytest.raises(CheckpointError, match="already exists and is not a run made by `detkit checkpoint import`"):
        import_checkpoint(pth, str(trained))
    assert sorted(os.listdir(trained)) == ["config.yml"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        import_checkpoint(pth, str(a_file))

    out = str(tmp_path / "imported")
    import_checkpoint(pth, out)
    with pytest.raises(CheckpointError, match="already holds an imported run; pass --overwrite"):
        import_checkpoint(pth, out)
    training = subprocess.Popen(["sleep", "60"])  # a live `detkit train` holding the imported run
    try:
        with open(os.path.join(out, "train.lock"), "w") as fh:
            json.dump({"pid": training.pid, "host": socket.gethostname()}, fh)
        with pytest.raises(RunLocked, match=f"not replacing: `detkit train` pid {training.pid} on host"):
            import_checkpoint(pth, out, overwrite=True)
    finally:
        training.kill()
        training.wait()
    assert os.path.isfile(os.path.join(out, IMPORT_RECORD))
    write_pth(pth, {**tiny_torchvision.tiny_state(90), "cls.bias": np.ones(91, np.float32)})
    import_checkpoint(pth, out, overwrite=True)
    assert os.listdir(os.path.join(out, "checkpoints"))  # the new run replaced the old one
    from detkit.inference.detector import Detector

    np.testing.assert_array_equal(Detector.from_checkpoint(out).model.rcnn_head.cls.bias.numpy(), np.ones(91))


def test_import_failure_leaves_nothing(tmp_path, tiny):
    pth = str(tmp_path / "bad.pth")
    write_pth(pth, {"other.weight": np.ones(2, np.float32)})
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="not a tiny checkpoint"):
        import_checkpoint(pth, str(out))
    assert not out.exists()
    with pytest.raises(CheckpointError, match="no such file"):
        import_checkpoint(str(tmp_path / "missing.pth"), str(out))


@pytest.fixture(scope="module")
def imported_320(tmp_path_factory) -> dict:
    """A built MobileNetV3-320 FPN model (2 classes, random weights) written as torchvision's state dict and
    imported: {"weights": {path: array} of the source model, "run_dir"}."""
    import keras

    from detkit.models.build import build_detector
    from detkit.pretrained import torchvision as tv

    tmp_path = tmp_path_factory.mktemp("imported_320")
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    keras.utils.set_random_seed(3)
    source = build_detector(tv.arch_config(arch), 2)
    state = tv.export_state_dict(source)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (3, 1024)
    pth = str(tmp_path / "fasterrcnn_mobilenet_v3_large_320_fpn-mine.pth")
    write_pth(pth, state)
    run_dir = str(tmp_path / "run")
    import_checkpoint(pth, run_dir, classes="cat,dog")  # arch recognised from keys and "320" in the name
    return {"weights": {v.path: v.numpy() for v in source.weights}, "run_dir": run_dir, "state": state}


def test_import_of_a_torchvision_mobilenet_320_state_dict_restores_every_weight(imported_320):
    """A real arch end to end: the weights of a built fpn model, written as torchvision's state dict, come back."""
    from detkit.inference.detector import Detector

    detector = Detector.from_checkpoint(imported_320["run_dir"])
    assert detector.config.dataset.image.min_size == 320 and detector.class_names == ["cat", "dog"]
    assert detector.config.model.base_network.name == "mobilenet_v3_large_tv"
    built = imported_320["weights"]
    loaded = {v.path: v.numpy() for v in detector.model.weights}
    assert built.keys() == loaded.keys() and len(built) > 100
    for path, value in built.items():
        np.testing.assert_array_equal(loaded[path], value, err_msg=path)


def test_init_from_an_imported_run_keeps_all_but_the_class_heads(imported_320):
    """train.init_from with another class count: body, FPN, RPN and box-head FCs restored, class heads new."""
    import keras

    from detkit.models.build import build_detector
    from detkit.runs import load_run_config, resolve
    from detkit.runs.restore import restore_for_finetuning

    run_dir = imported_320["run_dir"]
    keras.utils.set_random_seed(4)
    model = build_detector(load_run_config(run_dir), 5)
    head = model.rcnn_head
    fresh = {id(v): v.numpy() for v in (head.cls.kernel, head.cls.bias, head.box.kernel, head.box.bias)}
    restore_for_finetuning(model, resolve(run_dir).prefix, same_classes=False)
    built = imported_320["weights"]
    restored = kept = 0
    for variable in model.weights:
        if id(variable) in fresh:
            np.testing.assert_array_equal(variable.numpy(), fresh[id(variable)])  # left as initialised
            kept += 1
        else:
            np.testing.assert_array_equal(variable.numpy(), built[variable.path], err_msg=variable.path)
            restored += 1
    assert kept == 4 and restored == len(built) - 4
    assert tuple(head.cls.kernel.shape) == (1024, 6)


def test_old_torchvision_key_names_are_upgraded(imported_320, tmp_path):
    """torchvision's published weights predate 0.13: fpn.inner_blocks.I.weight, rpn.head.conv.weight."""
    old = {}
    for key, value in imported_320["state"].items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                key = key.replace(f"fpn.{block}.{i}.0.", f"fpn.{block}.{i}.")
        old[key] = value
    assert "backbone.fpn.inner_blocks.0.weight" in old and "rpn.head.conv.weight" in old
    assert upgrade_old_torchvision_keys(old).keys() == imported_320["state"].keys()
    pth = str(tmp_path / "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth")
    write_pth(pth, old)
    out = str(tmp_path / "run")
    import_checkpoint(pth, out, classes="cat,dog")
    from detkit.inference.detector import Detector

    loaded = {v.path: v.numpy() for v in Detector.from_checkpoint(out).model.weights}
    for path, value in imported_320["weights"].items():
        np.testing.assert_array_equal(loaded[path], value, err_msg=path)


def test_cli_import_takes_the_mobilenet_arch_from_the_file_name_or_refuses(imported_320, tmp_path, run_detkit):
    """The 320 and 800-pixel MobileNets share every key: a file named as torchvision names its files is imported
    as that arch; any other name is refused in one line naming both archs and --arch, and nothing is written."""
    ambiguous = str(tmp_path / "model.pth")
    write_pth(ambiguous, imported_320["state"])
    out = tmp_path / "run"
    code, stdout, err = run_detkit("checkpoint", "import", ambiguous, "--output", out, "--classes", "cat,dog")
    assert code == 1 and stdout == "" and err.count("\n") == 1, err
    assert err.startswith(f"detkit: error: {ambiguous}: the weights fit both fasterrcnn_mobilenet_v3_large_fpn "
                          "(800-1333 px) and fasterrcnn_mobilenet_v3_large_320_fpn (320-640 px)"), err
    assert err.rstrip().endswith("give --arch")
    assert not out.exists()

    from detkit.runs import load_run_config

    for name, min_size in (("fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth", 320),
                           ("fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", 800)):
        named = str(tmp_path / name)
        write_pth(named, imported_320["state"])
        run_dir = tmp_path / f"run-{min_size}"
        code, stdout, err = run_detkit("checkpoint", "import", named, "--output", run_dir, "--classes", "cat,dog")
        assert code == 0 and stdout == f"{run_dir}\n", err
        assert load_run_config(str(run_dir)).dataset.image.min_size == min_size
        with open(run_dir / IMPORT_RECORD, encoding="utf-8") as fh:
            assert json.load(fh)["arch"] == name.split("-")[0]
    code, stdout, err = run_detkit("checkpoint", "import", ambiguous, "--output", out, "--classes", "cat,dog",
                                   "--arch", "fasterrcnn_mobilenet_v3_large_320_fpn")
    assert code == 0 and load_run_config(str(out)).dataset.image.min_size == 320, err
