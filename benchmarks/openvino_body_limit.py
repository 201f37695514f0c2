"""The limit of an export's speed: a run's body (+ FPN) alone, and every layer with weights, in OpenVINO against
the same in TensorFlow and against the whole detector in TensorFlow, on one photo; one JSON object per run.

    python benchmarks/openvino_body_limit.py --checkpoint NAME=RUN [--checkpoint ...] [--rounds 20]
        [--raccoon ../shared/datasets/raccoon]

The body and FPN are the detector's own (BatchNorm folded, as detkit's inference runs them), traced on a
float32 input already resized and normalised to the size the run's transform gives the first raccoon photo,
frozen, and converted by OpenVINO's TensorFlow frontend as `detkit checkpoint export` converts the whole
detector (f32, latency hint, the process's threads). Timed interleaved, median of --rounds: TensorFlow body,
OpenVINO body, TensorFlow whole detector on the photo (resize, RPN, heads and all). OpenVINO's whole detector
can be no faster than its body alone, so `openvino_body_over_tf_detector` is the floor of the export's
OpenVINO / TensorFlow ratio. The "dense" sides add the RPN head on every level and the box head (fc6, fc7,
classifier, box regressor; a C4 run's tail) on as many pooled RoIs as the detector keeps for that photo:
every layer that holds weights, without resize, proposals, pooling or NMS, so
`openvino_dense_over_tf_detector` is a floor no faster pre- or post-processing can lower.
Needs `pip install -e ".[openvino]"`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def body_function(model):
    """tf.function: normalised float32 [1, H, W, 3] -> the maps the heads read (after the FPN when there is one)."""
    import tensorflow as tf

    from detkit.models.fold import inference_form

    body = inference_form(model.backbone)

    @tf.function
    def run(x):
        maps = body(x, training=False)
        maps = list(maps) if isinstance(maps, (list, tuple)) else [maps]
        return model.fpn(maps) if model.fpn is not None else maps

    return run


def dense_function(model, body_run):
    """tf.function: (network input, pooled RoIs [R, h, w, C]) -> the body's maps, the RPN head's outputs on each
    and the box head's on the RoIs: every layer with weights, in the order the detector runs them."""
    import tensorflow as tf

    @tf.function
    def run(x, pooled):
        maps = body_run(x)
        rpn = [t for m in maps for t in model.rpn_head(m)]
        reduced = [model.rcnn_head.reduce_features(m) for m in maps]
        return list(maps) + rpn + reduced + list(model.rcnn_head(pooled, training=False))

    return run


def openvino_body(run, shapes: list, work_dir: str, threads: int):
    """A tf.function of float32 inputs of `shapes`, frozen and compiled by OpenVINO's CPU plugin as detkit's
    export compiles a detector."""
    import tensorflow as tf
    from openvino.frontend import FrontEndManager
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from detkit.inference.runtimes import OPENVINO_PROPERTIES, openvino_module

    ov = openvino_module()
    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
    frozen = convert_variables_to_constants_v2(run.get_concrete_function(*specs))
    path = os.path.join(work_dir, "body.pb")
    with open(path, "wb") as fh:
        fh.write(frozen.graph.as_graph_def().SerializeToString())
    frontend = FrontEndManager().load_by_framework("tf")
    model = frontend.convert(frontend.load(path))
    properties = dict(OPENVINO_PROPERTIES)
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", properties)


def measure(name: str, run_dir: str, args) -> dict:
    """Body in both runtimes and the whole TensorFlow detector, interleaved."""
    from detkit.inference.detector import Detector

    sys.path.insert(0, HERE)
    from openvino_speed import photos

    photo = photos(args.raccoon, 1)[0]
    detector = Detector.from_checkpoint(run_dir)
    model = detector.model
    resized, hw = model.transform.resize(photo)
    x = model.transform.batch(resized[None], hw[None])
    run = body_function(model)
    stages = model.stages(resized[None], hw[None])
    count = max(int(np.asarray(stages["proposal_valid"]).sum()), 1)
    pooled = model.roi_settings.pooler(
        [model.rcnn_head.reduce_features(m) for m in stages["features"]], stages["proposals"][:, :count])
    dense = dense_function(model, run)
    with tempfile.TemporaryDirectory() as work:
        compiled = openvino_body(run, [tuple(x.shape)], work, args.threads)
        compiled_dense = openvino_body(dense, [tuple(x.shape), tuple(pooled.shape)], work, args.threads)
    request = compiled.create_infer_request()
    dense_request = compiled_dense.create_infer_request()
    feed, pooled_feed = x.numpy(), pooled.numpy()
    sides = {
        "tf_body": lambda: [m.numpy() for m in run(x)],
        "openvino_body": lambda: request.infer({0: feed}),
        "tf_dense": lambda: [t.numpy() for t in dense(x, pooled)],
        "openvino_dense": lambda: dense_request.infer({0: feed, 1: pooled_feed}),
        "tf_detector": lambda: detector.raw_detections(photo),
    }
    want = [m.numpy() for m in run(x)]
    got = list(request.infer({0: feed}).values())
    rel = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)) for a, b in zip(want, got))
    for fn in sides.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for key in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            sides[key]()
            times[key].append(time.perf_counter() - start)
    ms = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
    print(f"[limit] {name}: {ms}", file=sys.stderr, flush=True)
    return {
        "run": name, "input_hw": list(x.shape[1:3]), "rois": count, "rounds": args.rounds, "ms": ms,
        "openvino_body_over_tf_body": round(ms["openvino_body"] / ms["tf_body"], 3),
        "openvino_body_over_tf_detector": round(ms["openvino_body"] / ms["tf_detector"], 3),
        "body_share_of_tf_detector": round(ms["tf_body"] / ms["tf_detector"], 3),
        "openvino_dense_over_tf_detector": round(ms["openvino_dense"] / ms["tf_detector"], 3),
        "openvino_dense_over_tf_dense": round(ms["openvino_dense"] / ms["tf_dense"], 3),
        "openvino_body_max_rel_diff": rel,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--raccoon", default=os.path.join(REPO, "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for item in args.checkpoint:
        name, _, run_dir = item.partition("=")
        print(json.dumps(measure(name, run_dir, args)), flush=True)


if __name__ == "__main__":
    main()
