"""detkit's TensorFlow inference against torchvision's on the same weights, rounds interleaved across processes.

    python benchmarks/inference_vs_torchvision.py --torch-python /tmp/tv/bin/python --work-dir /tmp/detkit-parity
        [--archs A B ...] [--images 5] [--rounds 5] [--threads 2] [--openvino]

--work-dir is a `parity_torchvision.py` work directory: it holds each arch's torchvision state dict
(`ARCH.pth`) and the detkit run imported from it (`ARCH-run`). torch is never imported here: a child process
of --torch-python (this file with --torch-side) builds torchvision's model with those weights and waits; each
round it runs the first --images raccoon test photos once (`torch.no_grad`, --threads threads) and reports,
then this process runs them through a detkit Detector (resize included on both sides), the order of the two
alternating round by round (with --settle seconds of rest before each), so that the machine's load hits
both alike. A third side is detkit with its
BatchNorm left unfolded (the model before `detkit/models/fold.py`), traced with the fold switched off, to
show what folding gives; its detections are checked against the folded model's. With --openvino, a fourth
side is the run's float32 OpenVINO export (`detkit checkpoint export --format openvino`, to a temporary
directory; needs the openvino extra), run through a Detector as well, its detections matched with detkit's as
openvino_speed.py matches them. One JSON object per arch: median seconds per image of each side and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHS = ("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn")


def test_photos(count: int) -> list[str]:
    """The first `count` raccoon test photos of the packaged split, in file order (as parity_torchvision.py)."""
    sys.path.insert(0, HERE)
    from parity_torchvision import _data_dir, _read_split

    return [path for path, _ in _read_split(_data_dir(), "test")[:count]]


def torch_side(arch: str, pth: str, paths: list[str], threads: int) -> None:
    """Child: build torchvision's arch with the state dict, then one timed pass over the photos per input line."""
    import torch
    import torchvision
    from PIL import Image

    torch.set_num_threads(threads)
    model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None, num_classes=2)
    model.load_state_dict(torch.load(pth, map_location="cpu"))
    model.eval()
    images = [torchvision.transforms.functional.to_tensor(Image.open(p).convert("RGB")) for p in paths]
    with torch.no_grad():
        model([images[0]])
        print("ready", flush=True)
        for _ in sys.stdin:
            start = time.perf_counter()
            for image in images:
                model([image])
            print(json.dumps({"seconds_per_image": (time.perf_counter() - start) / len(images)}), flush=True)


def unfolded_runtime(detector):
    """A TensorFlow runtime of the detector's model traced with BatchNorm unfolded (for the comparison only)."""
    from detkit.inference.runtimes import TensorFlowRuntime
    from detkit.models.fold import unfolded

    runtime = TensorFlowRuntime(detector.model)
    with unfolded():
        runtime.one(np.zeros((64, 64, 3), np.uint8))  # traces now, with the fold off; the signature is shape-free
    return runtime


def same_detections(a: tuple, b: tuple, min_score: float = 0.05) -> bool:
    """Whether two raw outputs agree: detections scored >= min_score equal in label, within 0.01 in score and
    0.5 px in box coordinates, in the same order."""
    keep_a, keep_b = a[1] >= min_score, b[1] >= min_score
    if keep_a.sum() != keep_b.sum():
        return False
    return bool(np.array_equal(a[2][keep_a], b[2][keep_b]) and np.allclose(a[1][keep_a], b[1][keep_b], atol=0.01)
                and np.allclose(a[0][keep_a], b[0][keep_b], atol=0.5))


def openvino_detector(run: str, work_dir: str):
    """A Detector of the run's float32 OpenVINO export, written under work_dir."""
    from detkit.inference.detector import Detector
    from detkit.inference.openvino import export_openvino

    export_openvino(run, work_dir)
    return Detector.from_checkpoint(work_dir)


def measure(arch: str, args) -> dict:
    """Interleaved rounds of torchvision, detkit (folded), detkit unfolded and (--openvino) its export on one
    arch."""
    import tempfile

    from PIL import Image

    from detkit.inference.detector import Detector

    paths = test_photos(args.images)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    child = subprocess.Popen(
        [args.torch_python, os.path.abspath(__file__), "--torch-side", arch, "--pth",
         os.path.join(args.work_dir, f"{arch}.pth"), "--images", str(args.images), "--threads", str(args.threads)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    run = os.path.join(args.work_dir, f"{arch}-run")
    detector = Detector.from_checkpoint(run)
    folded = detector.runtime
    unfolded = unfolded_runtime(detector)
    agree = all(same_detections(folded.one(im), unfolded.one(im)) for im in images)
    scratch = tempfile.TemporaryDirectory(prefix="detkit-ov-")
    exported = openvino_detector(run, os.path.join(scratch.name, "export")) if args.openvino else None
    if exported is not None:
        from openvino_speed import parity  # this directory is on sys.path (test_photos)

        ov_parity = parity(detector, exported, images, 0.05)
    if child.stdout.readline().strip() != "ready":
        raise SystemExit(f"{arch}: the torch side did not start")

    def tf_round(runtime) -> float:
        start = time.perf_counter()
        for image in images:
            runtime.one(image)
        return (time.perf_counter() - start) / len(images)

    def torch_round() -> float:
        child.stdin.write("go\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())["seconds_per_image"]

    sides = {"torchvision": torch_round, "detkit": lambda: tf_round(folded),
             "detkit_unfolded": lambda: tf_round(unfolded)}
    if exported is not None:
        sides["openvino"] = lambda: tf_round(exported.runtime)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            time.sleep(args.settle)  # the other side's idle threads spin a while before they sleep
            times[name].append(sides[name]())
        print(f"[bench] {arch}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    child.stdin.close()
    child.wait()
    scratch.cleanup()
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    if exported is not None:
        more = {"openvino_over_torchvision": round(med["openvino"] / med["torchvision"], 3),
                "openvino_over_detkit": round(med["openvino"] / med["detkit"], 3),
                "openvino_parity_with_detkit": ov_parity}
    else:
        more = {}
    return {
        "arch": arch, "photos": len(images), "rounds": args.rounds, "threads": args.threads,
        "seconds_per_image": med,
        "detkit_over_torchvision": round(med["detkit"] / med["torchvision"], 3),
        "unfolded_over_torchvision": round(med["detkit_unfolded"] / med["torchvision"], 3),
        "folded_over_unfolded": round(med["detkit"] / med["detkit_unfolded"], 3),
        "folded_detections_equal_unfolded": agree, **more,
        "all_rounds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="")
    parser.add_argument("--work-dir", default="/tmp/detkit-parity")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of rest before each side's round")
    parser.add_argument("--openvino", action="store_true", help="also time the run's float32 OpenVINO export")
    parser.add_argument("--torch-side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pth", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_side:
        torch_side(args.torch_side, args.pth, test_photos(args.images), args.threads)
        return
    if not args.torch_python:
        parser.error("--torch-python is required (an interpreter with torch and torchvision)")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for arch in args.archs:
        print(json.dumps(measure(arch, args)), flush=True)


if __name__ == "__main__":
    main()
