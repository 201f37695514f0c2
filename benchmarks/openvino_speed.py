"""detkit's OpenVINO export against detkit's own TensorFlow inference: the same detections, and how fast.

    python benchmarks/openvino_speed.py --checkpoint NAME=RUN [--checkpoint ...] [--images 10] [--time-images 5]
        [--rounds 3] [--raccoon ../shared/datasets/raccoon] [--int8 [--calibration-images 300]
        [--int8-dataset DIR]]

For each run (a trained run, or one `detkit checkpoint import` made): `detkit checkpoint export --format
openvino` to a temporary directory; on the first --images raccoon photos, the share of TensorFlow's detections
(score >= --min-score) the export reproduces and back (same label, IoU >= 0.98, score within 0.01: detections
scored within 0.01 of the other side's floor are not counted, as the other side may drop them); then seconds
per image of both on the first --time-images photos, interleaved photo by photo with the order alternating,
median of --rounds. With --int8, runs trained on a dataset (any run, with --int8-dataset) are also exported in
int8 (`--int8`: calibrated on their training split, the export's own evaluation of both on their eval split is
reported) and timed beside the others. All run with the process's threads and oneDNN setting (uncapped unless ONEDNN_MAX_CPU_ISA is set, as
detkit's inference; OpenVINO's CPU plugin reads it too). One JSON object per run on stdout.
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


def photos(raccoon: str, count: int) -> list[np.ndarray]:
    """The first `count` raccoon photos (sorted names) as RGB arrays."""
    from PIL import Image

    folder = os.path.join(raccoon, "images")
    names = sorted(os.listdir(folder))[:count]
    return [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names]


def reproduced(ref: tuple, out: tuple, min_score: float, floor: float) -> tuple[int, int]:
    """(detections of ref scored >= min_score found in out, how many there are); those within 0.01 of out's
    floor are left out."""
    from detkit.eval.voc_map import iou_matrix

    boxes, scores, labels = ref
    found = total = 0
    for b, s, lab in zip(boxes, scores, labels):
        if s < min_score or s < floor + 0.01:
            continue
        total += 1
        same = (out[2] == lab) & (np.abs(out[1] - s) <= 0.01)
        found += int(same.any() and iou_matrix(b[None], out[0][same]).max() >= 0.98)
    return found, total


def floor_of(dets: tuple, cap: int, threshold: float) -> float:
    """The lowest score a side could have kept: its threshold, or its last score when it holds `cap` detections
    (its per-image or, for one class, per-class cap)."""
    return float(dets[1].min()) if len(dets[1]) >= cap else threshold


def parity(reference, other, images: list[np.ndarray], min_score: float) -> dict:
    """Share of the reference Detector's detections (score >= min_score) the other reproduces, and back."""
    post = reference.config.model.postprocess
    cap = min(post.max_total, post.max_per_class) if len(reference.class_names) == 1 else post.max_total
    there = back = total_ref = total_other = 0
    for image in images:
        ref, out = reference.raw_detections(image), other.raw_detections(image)
        hits, n = reproduced(ref, out, min_score, floor_of(out, cap, post.score_threshold))
        there, total_ref = there + hits, total_ref + n
        hits, n = reproduced(out, ref, min_score, floor_of(ref, cap, post.score_threshold))
        back, total_other = back + hits, total_other + n
    return {"reproduced": round(there / max(total_ref, 1), 4), "and_back": round(back / max(total_other, 1), 4),
            "detections": total_ref, "min_score": min_score}


def timed(detectors: dict, images: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Median over rounds of each detector's mean seconds per image, photo by photo, the order alternating."""
    names = list(detectors)
    per_round = {n: [] for n in names}
    for image in images[:1]:
        for n in names:
            detectors[n].raw_detections(image)  # warm-up: graph building, plugin compilation
    for r in range(rounds):
        spent = {n: 0.0 for n in names}
        for i, image in enumerate(images):
            for n in (names if (r + i) % 2 == 0 else names[::-1]):
                start = time.perf_counter()
                detectors[n].raw_detections(image)
                spent[n] += time.perf_counter() - start
        for n in names:
            per_round[n].append(spent[n] / len(images))
    return {n: round(statistics.median(v), 4) for n, v in per_round.items()}


def measure(name: str, run_dir: str, args) -> dict:
    """Export one run and compare it with TensorFlow's inference."""
    from detkit import Detector
    from detkit.inference.openvino import export_openvino

    images = photos(args.raccoon, max(args.images, args.time_images))
    with tempfile.TemporaryDirectory(prefix="detkit-openvino-") as tmp:
        start = time.time()
        export_openvino(run_dir, os.path.join(tmp, "ov"))
        export_seconds = time.time() - start
        tf_detector = Detector.from_checkpoint(run_dir)
        ov_detector = Detector.from_checkpoint(os.path.join(tmp, "ov"))
        agreement = parity(tf_detector, ov_detector, images[:args.images], args.min_score)
        detectors = {"tensorflow": tf_detector, "openvino": ov_detector}
        report = None
        if args.int8 and (tf_detector.config.dataset.dir or args.int8_dataset):
            from detkit.eval.int8 import export_int8

            _, report = export_int8(run_dir, os.path.join(tmp, "int8"), dataset_dir=args.int8_dataset or None,
                                    calibration_images=args.calibration_images, show_progress=False)
            detectors["openvino_int8"] = Detector.from_checkpoint(os.path.join(tmp, "int8"))
        seconds = timed(detectors, images[:args.time_images], args.rounds)
    return {"model": name, "run_dir": run_dir, "architecture": tf_detector.config.model.architecture,
            "parity": agreement,
            "seconds_per_image": seconds, "openvino_over_tensorflow": round(seconds["openvino"] / seconds["tensorflow"], 3),
            **({"int8_over_openvino": round(seconds["openvino_int8"] / seconds["openvino"], 3),
                "int8_export": report.summary()} if report else {}),
            "export_seconds": round(export_seconds, 1), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "cpu_count": os.cpu_count()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--raccoon", default=os.path.join(REPO, "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--time-images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-score", type=float, default=0.05)
    parser.add_argument("--int8", action="store_true", help="also export and time int8 (runs with a dataset)")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--int8-dataset", default="",
                        help="with --int8: a dataset directory (detkit dataset transform) for runs without their own "
                             "(imported ones), its train split calibrating and its test split scoring")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    for spec in args.checkpoint:
        name, _, run_dir = spec.partition("=")
        print(json.dumps(measure(name, run_dir, args)), flush=True)


if __name__ == "__main__":
    main()
