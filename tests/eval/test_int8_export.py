"""`detkit checkpoint export --format openvino --int8`: an int8 model whose recorded cost is what `detkit eval`
measures on it, coordinates kept in float32, and layers returned to float32 when int8 costs too much."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image


def invoke(*args):
    from detkit.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def calibration_dir(raccoon_dir, tmp_path_factory) -> str:
    """The raccoon copy's train split (160 photos) beside its test split, as the tiny run's classes."""
    out = tmp_path_factory.mktemp("int8") / "data"
    for split in ("train", "test"):
        ok(invoke("dataset", "transform", "--type", "csv", "--annotations",
                  os.path.join(raccoon_dir, "data", f"{split}_labels.csv"), "--images-dir",
                  os.path.join(raccoon_dir, "images"), "--output-dir", out, "--split", split,
                  *(["--overwrite"] if split == "test" else [])))
    return str(out)


@pytest.fixture(scope="module")
def int8_export(tiny_run, calibration_dir, tmp_path_factory) -> tuple[str, str]:
    """(the int8 export's directory, the command's stderr)."""
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    result = ok(invoke("checkpoint", "export", tiny_run["run_dir"], "--format", "openvino", "--int8", "--output", out,
                       "--dataset-dir", calibration_dir, "--calibration-split", "train", "--calibration-images", 24,
                       "--eval-split", "test", "--min-prob", "0.01"))
    assert result.stdout.strip() == str(out)  # NNCF's progress and logs stay off stdout
    return str(out), result.stderr


def evaluated(checkpoint, dataset_dir) -> dict:
    text = ok(invoke("eval", "--checkpoint", checkpoint, "--dataset-dir", dataset_dir, "--split", "test", "--json",
                     "--no-record", "--no-progress")).stdout
    return json.loads(text.strip().splitlines()[-1])


def test_the_recorded_cost_is_what_eval_measures(int8_export, tiny_run, calibration_dir, tmp_path):
    directory, stderr = int8_export
    manifest = json.loads(open(os.path.join(directory, "export.json")).read())
    report = manifest["int8"]
    assert manifest["precision"] == "int8" and manifest["step"] == tiny_run["step"]
    assert (report["calibration_split"], report["calibration_images"], report["eval_split"],
            report["eval_images"]) == ("train", 24, "test", 40)
    assert report["quantized_ops"] > 0
    assert report["ap50_loss"] == round(report["float32"]["map50"] - report["int8"]["map50"], 4)
    assert "AP50 lost" in stderr and f"{report['int8']['map50']:.4f}" in stderr
    # The int8 figure is `detkit eval` of the int8 export; the float32 one is `detkit eval` of the float32 export.
    assert abs(evaluated(directory, calibration_dir)["map50"] - report["int8"]["map50"]) <= 1e-4
    fp32 = tmp_path / "fp32"
    ok(invoke("checkpoint", "export", tiny_run["run_dir"], "--format", "openvino", "--output", fp32))
    assert json.loads((fp32 / "export.json").read_text())["precision"] == "float32"
    assert abs(evaluated(fp32, calibration_dir)["map50"] - report["float32"]["map50"]) <= 1e-4
    Image.fromarray(np.full((90, 120, 3), 100, np.uint8)).save(tmp_path / "grey.jpg")
    ok(invoke("predict", tmp_path / "grey.jpg", "--checkpoint", directory))


def test_int8_leaves_the_coordinates_in_float32(int8_export):
    import openvino as ov

    from detkit.inference.openvino import COORDINATE_OPS

    model = ov.Core().read_model(os.path.join(int8_export[0], "model.xml"))
    fed = [target.get_node().get_type_name() for op in model.get_ordered_ops()
           if op.get_type_name() == "FakeQuantize" for target in op.output(0).get_target_inputs()]
    assert "Convolution" in fed and not set(fed) & set(COORDINATE_OPS)


def test_layers_that_cost_too_much_go_back_to_float32(tiny_run, raccoon_dir, tmp_path):
    """NNCF's accuracy control: a metric that falls with every quantised layer keeps fewer of them."""
    from detkit import Detector
    from detkit.inference.openvino import convert, quantize_int8, quantized_ops, traced_detector
    from detkit.inference.runtimes import OpenVINORuntime

    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    model = convert(traced_detector(detector.model), str(tmp_path))
    images = [np.asarray(Image.open(os.path.join(raccoon_dir, "images", f"raccoon-{i}.jpg")).convert("RGB"))
              for i in range(1, 3)]
    reference = [OpenVINORuntime.compile(model).one(image) for image in images]

    def validate(compiled, items):
        """Minus the largest score change from float32's detections: 0 only when nothing moved."""
        runtime = OpenVINORuntime(compiled)
        each = []
        for index in items:
            got, ref = runtime.one(images[index])[1], reference[index][1]
            n = min(len(got), len(ref))
            each.append(-float(np.abs(got[:n] - ref[:n]).max(initial=0.0)) - abs(len(got) - len(ref)))
        return min(each), each

    plain = quantize_int8(model, images)
    drop = -validate(OpenVINORuntime.compile(plain)._compiled, range(len(images)))[0]
    assert drop > 0
    kept = quantize_int8(model, images, (list(range(len(images))), validate), max_drop=drop / 2)
    assert -validate(OpenVINORuntime.compile(kept)._compiled, range(len(images)))[0] <= drop / 2
    assert 0 <= quantized_ops(kept) < quantized_ops(plain)


def test_int8_refusals(tiny_run, calibration_dir, tmp_path):
    from detkit.errors import DetkitError

    for args, message in (
            (("--format", "saved_model", "--int8"), "--int8: only with --format openvino"),
            (("--format", "openvino", "--int8", "--dataset-dir", calibration_dir, "--calibration-split", "test",
              "--eval-split", "test"), "calibration and evaluation both on split 'test'")):
        result = invoke("checkpoint", "export", tiny_run["run_dir"], "--output", tmp_path / "x", *args)
        assert result.exit_code != 0 and isinstance(result.exception, DetkitError), result.output
        assert message in str(result.exception)
        assert not os.path.exists(tmp_path / "x")


def test_calibration_photos_are_spread_over_the_split(tiny_run, calibration_dir):
    """A split sorted by class or source must not calibrate on its first part only: every (40 // 10)-th photo."""
    from detkit import Detector
    from detkit.eval.runner import photos_of_split

    cfg = Detector.from_checkpoint(tiny_run["run_dir"]).config
    every = [gt.image_id for _, gt in photos_of_split(cfg, calibration_dir, "test", show_progress=False)]
    spread = photos_of_split(cfg, calibration_dir, "test", limit=10, show_progress=False)
    assert len(every) == 40
    assert [gt.image_id for _, gt in spread] == every[0:40:4]
    assert [image.shape[:2] for image, _ in spread] == [(gt.height, gt.width) for _, gt in spread]
    assert len(photos_of_split(cfg, calibration_dir, "test", limit=30, show_progress=False)) == 30


def test_a_photos_time_is_its_fastest_run(monkeypatch):
    """Three runs of 5, 2 and 4 ticks of a clock: the photo took 2."""
    from detkit.eval import int8

    clock = {"now": 0.0}
    ticks = iter([5.0, 2.0, 4.0])

    class Runtime:
        def one(self, pixels):
            clock["now"] += next(ticks)

    monkeypatch.setattr(int8.time, "perf_counter", lambda: clock["now"])
    assert int8.fastest_call(Runtime(), np.zeros((2, 2, 3), np.uint8), 3)[1] == 2.0
