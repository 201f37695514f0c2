"""Benchmark `detkit eval --report DIR` against `detkit eval` alone: prints one JSON object with the ratio.

    python benchmarks/eval_report.py --checkpoint RUN [--checkpoint RUN2 ...] [--split test] [--repeats 3]
        [--machine NAME]

Each command runs as a user types it (`detkit eval --checkpoint RUN --split S` and the same with `--report
DIR`), in a subprocess, alternating which goes first, `--repeats` times each; the ratio is of the medians
of wall time, process start-up and TensorFlow import included. Both record to the run as usual (TensorBoard,
metrics.json). Without --checkpoint it first trains the tiny CPU model (about 15 s) and says so
("trained_tiny_run": true): its inference takes almost no time, so its ratio is the worst case, not that
of a real detector.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def timed(args: list[str]) -> float:
    """Wall seconds of one `detkit` command (its output discarded); fails loudly if it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "detkit", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"detkit {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def measure(checkpoint: str, split: str, repeats: int, workdir: str) -> dict:
    """Median wall time of eval alone and of eval --report, alternating their order."""
    base = ["eval", "--checkpoint", checkpoint, "--split", split, "--no-progress"]
    out = os.path.join(workdir, f"report-{abs(hash(checkpoint))}")
    alone, report = [], []
    for i in range(repeats):
        pair = [("alone", base), ("report", base + ["--report", out])]
        for name, args in (pair if i % 2 == 0 else pair[::-1]):
            (alone if name == "alone" else report).append(timed(args))
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    a, r = statistics.median(alone), statistics.median(report)
    return {"checkpoint": checkpoint, "split": split, "images": data.get("num_images"),
            "classes": len(data["per_class"]), "eval_seconds": [round(s, 2) for s in alone],
            "report_seconds": [round(s, 2) for s in report], "ratio": round(r / a, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="run dir (repeatable; default: tiny run)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--machine", default=platform.node(), help="name of the machine, for the record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        trained = not args.checkpoint
        if trained:
            from predict import train_tiny_run

            print("training the tiny model (about 15 s)", file=sys.stderr)
            args.checkpoint = [train_tiny_run(workdir)]
        runs = []
        for checkpoint in args.checkpoint:
            print(f"timing {checkpoint}", file=sys.stderr)
            runs.append(measure(checkpoint, args.split, args.repeats, workdir))
    print(json.dumps({"benchmark": "eval_report", "machine": args.machine, "processor": platform.processor(),
                      "cpus": os.cpu_count(), "trained_tiny_run": trained, "repeats": args.repeats,
                      "runs": runs, "max_ratio": max(r["ratio"] for r in runs)}))


if __name__ == "__main__":
    main()
