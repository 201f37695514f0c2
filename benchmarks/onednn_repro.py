"""The crash behind detkit's oneDNN cap for training, reproduced; and inference shown safe without the cap.

    python benchmarks/onednn_repro.py [--repeats 3] [--evals 5] [--work DIR]

Training: the tiny model (detkit/config/tiny.py) on the packaged raccoon copy's test split, 15 SGD steps at batch
1, in a fresh `detkit train` process per run, with ONEDNN_MAX_CPU_ISA at each level (ALL is no cap) and once with
oneDNN off (TF_ENABLE_ONEDNN_OPTS=0). On TensorFlow 2.21 on a 2-core AMD EPYC (Zen 4, AVX-512) every run at an
AVX-512 level (ALL, AVX512_CORE_BF16, AVX512_CORE_VNNI, AVX512_CORE) dies in its first steps, by SIGSEGV or by
glibc's SIGABRT on a corrupted heap; under gdb the SIGSEGV is in a oneDNN JIT kernel's masked AVX-512 store
(`vmovups %zmm1,(%r12){%k2}`), with ONEDNN_VERBOSE=1 showing convolution backward kernels (jit:avx512_core
backward_weights, brgconv backward_data) as the last to run. AVX2 and oneDNN off train.
Inference: `detkit eval` of that run (trained at AVX2), uncapped, --evals times with glibc's heap checks on.
Prints one JSON object: the machine, TensorFlow's version, each run's exit code and signal.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile

from onednn_soak import HEAP_MESSAGES, cpu_name

LEVELS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_VNNI", "AVX512_CORE", "AVX2")


def outcome(code: int) -> str:
    """"ok", "exit N" or the signal's name."""
    if code == 0:
        return "ok"
    number = -code if code < 0 else code - 128 if code > 128 else 0
    return signal.Signals(number).name if number in {s.value for s in signal.Signals} else f"exit {code}"


def run_detkit(args: list[str], env: dict) -> tuple[int, list[str]]:
    """A `python -m detkit` process's exit code (negative: the signal that ended it) and glibc's heap messages."""
    proc = subprocess.run([sys.executable, "-m", "detkit", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, errors="replace")
    lines = proc.stderr.replace("\r", "\n").splitlines()
    return proc.returncode, [line.strip()[:200] for line in lines if HEAP_MESSAGES.search(line)][:2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="training runs per ISA level")
    parser.add_argument("--evals", type=int, default=5, help="uncapped `detkit eval` runs")
    parser.add_argument("--work", default="", help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)

    import detkit
    from detkit.config.tiny import tiny_config_yaml

    work = args.work or tempfile.mkdtemp(prefix="detkit-onednn-")
    root = os.path.join(os.path.dirname(detkit.__file__), "data", "raccoon")
    data = os.path.join(work, "data")
    base = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")}
    base.update(PYTHONUNBUFFERED="1")
    run_detkit(["dataset", "transform", "--type", "csv", "--annotations", os.path.join(root, "test_labels.csv"),
            "--images-dir", os.path.join(root, "images"), "--split", "test", "--output-dir", data, "--overwrite"],
           base)
    config = os.path.join(work, "tiny.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(tiny_config_yaml(data, os.path.join(work, "jobs"), train={
            "num_steps": 15, "batch_size": 1, "checkpoint_every_steps": 15, "mixed_precision": "float32",
            "optimizer": {"type": "sgd", "momentum": 0.9}}, eval={"split": "test"}))

    training = []
    settings = [({"ONEDNN_MAX_CPU_ISA": level}, level) for level in LEVELS] + [({"TF_ENABLE_ONEDNN_OPTS": "0"},
                                                                                "oneDNN off")]
    for extra, label in settings:
        for i in range(args.repeats):
            name = f"{label.replace(' ', '-')}-{i}"
            code, heap = run_detkit(["train", "-c", config, "-o", f"train.run_name={name}"], dict(base, **extra))
            training.append({"setting": label, "run": i, "exit_code": code, "outcome": outcome(code),
                             "heap_lines": heap})
            print(f"onednn: train {label} #{i}: {outcome(code)}", file=sys.stderr, flush=True)

    run_dir = os.path.join(work, "jobs", "AVX2-0")
    inference = []
    for i in range(args.evals):
        code, heap = run_detkit(["eval", "--checkpoint", run_dir, "--dataset-dir", data, "--split", "test", "--no-record",
                       "--no-progress"], dict(base, ONEDNN_MAX_CPU_ISA="ALL", MALLOC_CHECK_="3"))
        inference.append({"run": i, "exit_code": code, "outcome": outcome(code), "heap_lines": heap})
        print(f"onednn: eval uncapped #{i}: {outcome(code)}", file=sys.stderr, flush=True)

    import tensorflow as tf

    print(json.dumps({"cpu": cpu_name(), "machine": platform.machine(), "tensorflow": tf.__version__,
                      "training": training, "inference_uncapped": inference}))


if __name__ == "__main__":
    main()
