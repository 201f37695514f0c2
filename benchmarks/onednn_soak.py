"""Soak test of TensorFlow's oneDNN kernels without detkit's ISA cap: repeated short trainings, crashes counted.

    python benchmarks/onednn_soak.py --runs 12 --minutes 1.5 [--isa ALL] [--dataset-dir DIR] [--work DIR]

detkit caps oneDNN at AVX2 on AMD CPUs with AVX-512 (`detkit/utils/cpu.py`) because TensorFlow 2.21's
AVX-512 kernels once corrupted the heap in training there (`double free or corruption`). This script is how
that is reproduced, or shown gone: it runs `detkit train --dataset-dir D --minutes M --from-scratch` again and
again with ONEDNN_MAX_CPU_ISA set to --isa (a user's own value, which detkit leaves alone) and glibc's heap
checks on (MALLOC_CHECK_=3, so a corrupted heap aborts at once rather than later or never), cycling through
the single-level and multi-level (fpn) models in float32 and mixed bfloat16 (the kernels the cap excludes).
A run that dies by a signal, or prints glibc's heap messages, counts as a corruption. Prints one JSON object:
the machine, TensorFlow's version, every run (model, precision, exit code, steps, seconds, the matching line).
Without --dataset-dir it converts the packaged raccoon copy (detkit/data) first.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HEAP_MESSAGES = re.compile(r"double free|corrupt|free\(\): invalid|malloc\(\)|munmap_chunk|Segmentation fault|"
                           r"Fatal Python error|Aborted")
VARIANTS = (("single_level", "float32"), ("fpn", "float32"), ("single_level", "mixed_bfloat16"),
            ("fpn", "mixed_bfloat16"))


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def packaged_raccoon(work: str) -> str:
    """Convert the raccoon copy shipped with detkit into WORK/data (its train split); the folder."""
    import detkit

    root = os.path.join(os.path.dirname(detkit.__file__), "data", "raccoon")
    data = os.path.join(work, "data")
    subprocess.run([sys.executable, "-m", "detkit", "dataset", "transform", "--type", "csv", "--annotations",
                    os.path.join(root, "train_labels.csv"), "--images-dir", os.path.join(root, "images"), "--split",
                    "train", "--output-dir", data, "--overwrite"], check=True, stdout=subprocess.DEVNULL)
    return data


def one_run(index: int, data: str, work: str, minutes: float, isa: str, architecture: str, precision: str) -> dict:
    """One training run; what it ended with."""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa, MALLOC_CHECK_="3", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "detkit", "train", "--dataset-dir", data, "--minutes", str(minutes),
               "--from-scratch", "-o", f"train.job_dir={os.path.join(work, 'jobs')}", "-o",
               f"train.run_name=soak-{index}", "-o", f"model.architecture={architecture}", "-o",
               f"train.mixed_precision={precision}"]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          errors="replace")
    seconds = time.perf_counter() - start
    text = proc.stderr.replace("\r", "\n")
    heap = [line.strip() for line in text.splitlines() if HEAP_MESSAGES.search(line)]
    saved = glob.glob(os.path.join(work, "jobs", f"soak-{index}", "checkpoints", "ckpt-*.index"))
    steps = [int(re.search(r"ckpt-(\d+)", path).group(1)) for path in saved]
    return {"run": index, "architecture": architecture, "precision": precision, "isa": isa,
            "exit_code": proc.returncode, "seconds": round(seconds, 1), "last_checkpoint": max(steps, default=None),
            "corruption": proc.returncode < 0 or bool(heap), "heap_lines": heap[:3],
            "error": "" if proc.returncode == 0 else (text.strip().splitlines() or [""])[-1][:300]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=1.5, help="training minutes of each run")
    parser.add_argument("--isa", default="ALL", help="ONEDNN_MAX_CPU_ISA for the runs (ALL: no cap; AVX2: detkit's)")
    parser.add_argument("--dataset-dir", default="", help="a `detkit dataset transform` output with a train split")
    parser.add_argument("--work", default="", help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)

    work = args.work or tempfile.mkdtemp(prefix="detkit-soak-")
    data = args.dataset_dir or packaged_raccoon(work)
    import tensorflow as tf  # after the runs' data is made, only for its version

    runs = []
    for i in range(args.runs):
        architecture, precision = VARIANTS[i % len(VARIANTS)]
        runs.append(one_run(i, data, work, args.minutes, args.isa, architecture, precision))
        print(f"soak: run {i + 1}/{args.runs} {architecture} {precision}: exit {runs[-1]['exit_code']}, "
              f"{runs[-1]['seconds']} s{' CORRUPTION' if runs[-1]['corruption'] else ''}", file=sys.stderr)
    flags = set()
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
                break
    print(json.dumps({
        "cpu": cpu_name(), "avx512": sorted(f for f in flags if f.startswith(("avx512", "amx"))),
        "machine": platform.machine(), "tensorflow": tf.__version__, "isa": args.isa, "minutes": args.minutes,
        "runs": len(runs), "corrupted": sum(r["corruption"] for r in runs),
        "failed": sum(r["exit_code"] != 0 for r in runs), "details": runs,
    }))


if __name__ == "__main__":
    main()
