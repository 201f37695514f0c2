"""Training speed of the from-scratch CPU models the recipe chooses between: images/s by architecture, pyramid
levels and input side; prints one JSON object (the data behind detkit/recipe/rules.py's cost model).

    python benchmarks/train_speed.py [--raccoon ../shared/datasets/raccoon] [--steps 40] [--sides 320 448 640]

Each case is a fresh `detkit train --dataset-dir` of the raccoon train split with the recipe on and the case's
keys set (architecture, fpn levels and channels, input side, RoIs sampled), for --steps steps of batch 4; the
rate leaves out the first step (tracing) and is read from the trainer's `finished ...` line. Compare rates only
within one run of this script, on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RATE = re.compile(r"finished at step (\d+) after [\d.]+ min \(([\d.]+) images/s, ([\d.]+) after the first step\)")
# name -> the keys that make the case (the recipe fills in everything else).
CASES = {
    "single_level": [],
    "fpn_8_16": ["model.architecture=fpn", "model.fpn.body_strides=[8,16]", "model.fpn.channels=64"],
    "fpn_4_8_16": ["model.architecture=fpn", "model.fpn.body_strides=[4,8,16]", "model.fpn.channels=64"],
}


def run_case(data: str, work: str, name: str, keys: list[str], side: int, rois: int, steps: int) -> dict:
    """One short `detkit train`; its steady images/s."""
    run_dir = os.path.join(work, "jobs", f"{name}-{side}-{rois}")
    if os.path.exists(run_dir):  # detkit would resume it, train no step and report a rate of 0
        raise SystemExit(f"{run_dir} exists from an earlier run of this script: give a fresh --work")
    args = [sys.executable, "-m", "detkit", "train", "--dataset-dir", data, "--from-scratch",
            "-o", f"train.job_dir={os.path.join(work, 'jobs')}", "-o", f"train.run_name={name}-{side}-{rois}",
            "-o", f"train.num_steps={steps}", "-o", "train.checkpoint_every_steps=100000",
            "-o", f"dataset.image.min_size={side}", "-o", f"dataset.image.max_size={side}",
            "-o", f"model.rcnn.target.minibatch_size={rois}", "-o", "train.image_summary_every_steps=0"]
    for key in keys:
        args += ["-o", key]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    match = RATE.search(proc.stderr)
    if proc.returncode != 0 or not match:
        raise SystemExit(f"{name} {side}: detkit train failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"case": name, "side": side, "rois": rois, "images_per_second": float(match.group(3))}


def main(argv=None) -> None:
    """Convert the raccoon train split, time every case, print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raccoon", default=os.path.join(REPO, "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sides", type=int, nargs="+", default=[320, 448, 640])
    parser.add_argument("--rois", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="detkit-train-speed-")
    data = os.path.join(work, "data")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, "-m", "detkit", "dataset", "transform", "--type", "csv", "--annotations",
                        os.path.join(args.raccoon, "data", "train_labels.csv"), "--images-dir",
                        os.path.join(args.raccoon, "images"), "--output-dir", data, "--split", "train"],
                       check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    results = []
    for side in args.sides:
        for rois in args.rois:
            for name in args.cases:
                results.append(run_case(data, work, name, CASES[name], side, rois, args.steps))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "train_speed", "steps": args.steps, "batch": 4, "cpu_cores": os.cpu_count(),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
