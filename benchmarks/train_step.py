"""Training throughput of a tiny Faster R-CNN: images/s for batch 1 and 2, float32 and bfloat16, 1 and 2
local workers; prints one JSON object.

    python benchmarks/train_step.py [--raccoon ../shared/datasets/raccoon] [--steps 15] [--work DIR]

The raccoon test split is transformed to two TFRecord shards (one per worker) with detkit's own transform;
every run is a fresh `detkit train` process (2 workers: `detkit train --local-workers 2`), so each gets its
own TensorFlow set-up (bfloat16 runs may need oneDNN off, which is decided before TensorFlow starts).
`batch` is per worker: 2 workers at batch 1 train with a global batch of 2. The rate excludes the first
step (tracing) and is taken from the chief's `finished ...` log line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


RATE = re.compile(r"finished at step (\d+) after [\d.]+ min \(([\d.]+) images/s, ([\d.]+) after the first step\)")


def run(config: str, name: str, batch: int, policy: str, workers: int, steps: int) -> dict:
    """One `detkit train` run; its steady images/s (global) and wall time."""
    args = [sys.executable, "-m", "detkit", "train", "-c", config, "-o", f"train.run_name={name}",
            "-o", f"train.batch_size={batch * workers}", "-o", f"train.num_steps={steps}",
            "-o", f"train.mixed_precision={policy}"]
    if workers > 1:
        args += ["--local-workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    start = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.time() - start
    match = RATE.search(proc.stderr)
    if proc.returncode != 0 or not match:
        raise SystemExit(f"{name}: detkit train failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"batch_per_worker": batch, "precision": policy, "workers": workers, "global_batch": batch * workers,
            "images_per_second": float(match.group(3)), "images_per_second_incl_first_step": float(match.group(2)),
            "wall_seconds": round(wall, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raccoon", default=os.path.join(REPO, "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)

    from detkit.config.tiny import tiny_config_yaml
    from detkit.datasets.readers.common import Source
    from detkit.datasets.transform import TransformOptions, transform
    from detkit.utils import cpu

    work = args.work or tempfile.mkdtemp(prefix="detkit-train-step-")
    data = os.path.join(work, "data")
    transform(TransformOptions(fmt="csv", output_dir=data, splits=["test"], overwrite=True, num_shards=2,
                               source=Source(annotations=os.path.join(args.raccoon, "data", "test_labels.csv"),
                                             images_dir=os.path.join(args.raccoon, "images"))))
    config = os.path.join(work, "tiny.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(tiny_config_yaml(data, os.path.join(work, "jobs"), train={
            "run_name": "", "checkpoint_every_steps": 1000000, "log_every_steps": 1000000,
            "optimizer": {"type": "sgd", "momentum": 0.9}}))
    results = []
    for workers in (1, 2):
        for policy in ("float32", "mixed_bfloat16"):
            for batch in (1, 2):
                name = f"w{workers}-{policy}-b{batch}"
                results.append(run(config, name, batch, policy, workers, args.steps))
                print(f"{name}: {results[-1]['images_per_second']:.2f} images/s", file=sys.stderr, flush=True)
    flags = cpu.cpu_info()[1]
    cap = os.environ.get(cpu.ONEDNN_ISA_VAR) or cpu.onednn_isa_cap(*cpu.cpu_info())  # what `detkit train` ran with
    print(json.dumps({
        "benchmark": "train_step", "model": "small_resnet [8,16,16,32], images 160-224 px, raccoon test split",
        "steps": args.steps, "cpu_cores": os.cpu_count(), "onednn_isa_cap": cap,
        "native_bf16": cpu.native_bf16(flags, cap)[1],
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
