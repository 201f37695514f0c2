"""Export a run to OpenVINO, a CPU inference runtime (runtimes.py runs what it writes).

    detkit checkpoint export RUN --format openvino --output DIR [--int8]   # --int8: detkit/eval/int8.py
    Detector.from_checkpoint(DIR).predict(image)        # `detkit predict --checkpoint DIR` alike

DIR holds model.xml + model.bin, the whole detector from an RGB uint8 image [H, W, 3] to its detections in the
image's own pixels (resize, normalisation, network, NMS; tiles when the run has them), traced with the portable
formulation of per-class NMS (models/nms.py), in float32 (or int8 by quantize_int8); and the run's config.yml and
classes.json and export.json, the manifest. OpenVINO is an optional extra: pip install "detkit[openvino]".
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf

from detkit.config import dump_yaml
from detkit.errors import DetkitError
from detkit.inference.export import ExportInfo, export_manifest, foreign_entries, load_for_export, staged_export
from detkit.inference.runtimes import (OPENVINO_FORMAT as FORMAT, OPENVINO_INPUT as INPUT,
                                       OPENVINO_MODEL_FILE as MODEL_FILE, OPENVINO_OUTPUTS as OUTPUTS, one_line,
                                       openvino_module)
from detkit.models.faster_rcnn import FasterRCNN, detections_in_order
from detkit.models.fold import unfolded
from detkit.models.nms import portable
from detkit.runs import exported_model, layout
from detkit.runs.exported import MANIFEST_FILE
from detkit.utils import atomic

# Lazy imports: openvino is an optional extra, imported through openvino_module() by the functions that need it.

WEIGHTS_FILE = "model.bin"
# Ops after the network that compute boxes, shapes and indices: int8 there moves boxes, so they stay in float32
# (on a 6-class run, quantising them too cost 0.54 AP50; without them 0.005).
COORDINATE_OPS = ("StridedSlice", "Multiply", "Gather", "ScatterNDUpdate", "ShapeOf", "Transpose")
ENTRIES = frozenset({MODEL_FILE, WEIGHTS_FILE, layout.CONFIG_FILE, layout.CLASSES_FILE, MANIFEST_FILE})


def traced_detector(model: FasterRCNN) -> Any:
    """The detector as one frozen graph: image uint8 [H, W, 3] -> (boxes [n, 4], scores [n], labels [n] int32)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    def detect(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        out = model({"image": tf.expand_dims(image, 0), "image_hw": tf.shape(image)[None, :2]}, training=False)
        boxes, scores, labels = detections_in_order(out, 0)
        return boxes, scores, tf.cast(labels, tf.int32)

    # OpenVINO folds BatchNorm into the convolutions itself, and NNCF's int8 kept more AP50 on the graph as the
    # checkpoint has it (benchmarks/README.md, "BatchNorm folded at inference").
    with portable(), unfolded():
        concrete = tf.function(detect).get_concrete_function(tf.TensorSpec([None, None, 3], tf.uint8, name=INPUT))
    return convert_variables_to_constants_v2(concrete)


def unstable_top_k(model: Any) -> int:
    """Make every stable TopK of an OpenVINO model unstable; returns how many.

    The TensorFlow frontend keeps TopKV2's order of ties, and the CPU plugin's stable sort is ~100x slower (the
    top 1000 of 5400 RPN logits: 100 ms instead of 0.15 ms); only exact ties can come out in another order.
    """
    import openvino.opset11 as ops

    count = 0
    for op in model.get_ordered_ops():
        attrs = op.get_attributes() if op.get_type_name() == "TopK" else {}
        if attrs.get("stable"):
            new = ops.topk(op.input_value(0), op.input_value(1), attrs["axis"], attrs["mode"], attrs["sort"],
                           attrs["index_element_type"], stable=False)
            for i in range(2):
                for target in op.output(i).get_target_inputs():
                    target.replace_source_output(new.output(i))
            count += 1
    return count


def convert(frozen: Any, work_dir: str) -> Any:
    """An OpenVINO model of a frozen detector graph, its input named "image" and outputs "boxes", "scores",
    "labels".

    By OpenVINO's TensorFlow frontend itself, not `openvino.convert_model`: that tool sends usage telemetry over the
    network unless the user opted out, from processes it forks beside TensorFlow's threads.
    """
    openvino_module()
    from openvino.frontend import FrontEndManager

    path = os.path.join(work_dir, "frozen.pb")
    with open(path, "wb") as fh:
        fh.write(frozen.graph.as_graph_def().SerializeToString())
    try:
        frontend = FrontEndManager().load_by_framework("tf")
        model = frontend.convert(frontend.load(path))
    except Exception as exc:  # OpenVINO's conversion errors share no base class; its message names the ops
        raise DetkitError(f"OpenVINO cannot convert this model: {one_line(exc, 300)}") from None
    unstable_top_k(model)
    by_name = {t.name: name for t, name in zip(frozen.outputs, OUTPUTS)}  # "Identity:0", "Identity_1:0", ...

    def tensor_name(name: str) -> str:
        return name if ":" in name else name + ":0"

    for port in model.outputs:
        names = [by_name[tensor_name(n)] for n in port.get_names() if tensor_name(n) in by_name]
        if not names:
            raise DetkitError(f"OpenVINO's model has an output detkit did not make ({sorted(port.get_names())})")
        port.get_tensor().set_names({names[0]})
    model.inputs[0].get_tensor().set_names({INPUT})
    return model


def nncf_module() -> Any:
    """The nncf package (OpenVINO's quantiser), or a one-line error saying how to install it."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import nncf
    except ImportError:
        raise DetkitError('NNCF is not installed: pip install "detkit[openvino]" (or pip install nncf)') from None
    return nncf


def quantize_int8(model: Any, images: Sequence[Any], validation: Optional[tuple[Sequence[Any], Callable]] = None,
                  max_drop: float = 0.01) -> Any:
    """An int8 copy of an OpenVINO detector, calibrated on `images` (RGB uint8 arrays); COORDINATE_OPS stay float.

    With `validation` = (items, validate), NNCF's accuracy control keeps in float32 the layers whose int8 costs
    most until validate(compiled_model, items) -> (metric, per-item metrics) drops at most `max_drop`.
    """
    nncf = nncf_module()
    nncf.set_log_level(logging.WARNING)  # its INFO lists every op it leaves alone
    scope = nncf.IgnoredScope(types=list(COORDINATE_OPS))
    calibration = nncf.Dataset(list(images))
    # NNCF's slower bias correction: on a raccoon run the fast one lost 0.014 AP50, this one none.
    common = dict(subset_size=len(images), ignored_scope=scope, fast_bias_correction=False)
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is for results
        if validation is None:
            return nncf.quantize(model, calibration, **common)
        items, validate = validation

        def shifted(compiled: Any, data: Any) -> tuple[float, list[float]]:
            # NNCF also computes the relative drop, dividing by the float32 metric: 0 (a model that finds nothing
            # yet) would raise. The shift leaves the absolute drop and the ranking as they are.
            metric, each = validate(compiled, data)
            return metric + 1.0, [value + 1.0 for value in each]

        return nncf.quantize_with_accuracy_control(model, calibration, nncf.Dataset(list(items)), shifted,
                                                   max_drop=max_drop, **common)


def quantized_ops(model: Any) -> int:
    """How many ops of an OpenVINO model take an int8-quantised input (FakeQuantize before them)."""
    return sum(len(op.output(0).get_target_inputs()) for op in model.get_ordered_ops()
               if op.get_type_name() == "FakeQuantize")


def foreign_export_entries(path: str) -> Optional[str]:
    """None if `path` is exactly an earlier OpenVINO export, else why not (for a one-line refusal)."""
    return foreign_entries(path, ENTRIES, f"{MANIFEST_FILE} of an OpenVINO export",
                           lambda p: exported_model(p) is not None)


def export_openvino(source: str, output_dir: str, min_prob: Optional[float] = None,
                    max_detections: Optional[int] = None, overwrite: bool = False,
                    overrides: tuple[str, ...] = (),
                    refine: Optional[Callable[[Any, Any], tuple[Any, dict]]] = None) -> ExportInfo:
    """Write the newest (or the given) checkpoint of a run as an OpenVINO model directory (see the module).

    `refine(detector, model)` -> (model, manifest entries) changes the converted model before it is written
    (int8: detkit/eval/int8.py) and says what it did in export.json.
    """
    ov = openvino_module()
    with staged_export(output_dir, overwrite, foreign_export_entries) as staging:
        detector, min_prob, max_detections = load_for_export(source, overrides, min_prob, max_detections)
        cfg = detector.config
        cfg.predict.min_prob, cfg.predict.max_detections = min_prob, max_detections
        model = convert(traced_detector(detector.model), staging)
        extra = {"precision": "float32"}
        if refine is not None:
            model, more = refine(detector, model)
            extra.update(more)
        target = os.path.join(staging, "model")
        os.makedirs(target)
        try:
            ov.save_model(model, os.path.join(target, MODEL_FILE), compress_to_fp16=False)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types alike
            raise DetkitError(f"{output_dir}: cannot write the OpenVINO model ({one_line(exc)})") from None
        manifest = export_manifest(detector, min_prob, max_detections, format=FORMAT, openvino=ov.__version__,
                                   inputs={INPUT: "uint8 [H, W, 3] RGB pixels"}, outputs={
                                       "boxes": "float32 [N, 4] xmin, ymin, xmax, ymax in the image's pixels",
                                       "scores": "float32 [N], best first, before min_prob",
                                       "labels": "int32 [N] 1-based class ids (classes.json[labels - 1])"}, **extra)
        atomic.write_text(os.path.join(target, layout.CONFIG_FILE), dump_yaml(cfg))
        atomic.write_json(os.path.join(target, layout.CLASSES_FILE), detector.class_names)
        atomic.write_json(os.path.join(target, MANIFEST_FILE), manifest)
    return ExportInfo(output_dir=output_dir, checkpoint=detector.checkpoint.prefix, step=detector.checkpoint.step,
                      min_prob=min_prob, max_detections=max_detections)
