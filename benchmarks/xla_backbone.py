"""Does XLA speed up a base network on this machine? One training pass (forward + gradients) with and without it.

    python benchmarks/xla_backbone.py [--backbones small_resnet,mobilenet_v2,resnet50] [--size 320]

Prints one JSON line per backbone: median seconds of a forward+backward pass of the backbone alone, compiled by
TensorFlow's graph runtime (`plain_s`) and by XLA (`xla_s`), timed alternately. Only the backbone is compared
because the whole training step cannot be compiled by XLA (proposal NMS and sampling have data-dependent shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _measure(tf, backbone: str, size: int, threads: int, warmup: int, repeats: int) -> dict:
    """Median seconds of one forward+backward pass, graph vs XLA, alternated."""
    from detkit.config import load_config
    from detkit.models.build import build_detector

    cfg = load_config(overrides=[f"model.base_network.name={backbone}", "model.base_network.weights=none"])
    net = build_detector(cfg, 1).backbone
    images = tf.random.uniform([1, size, size, 3], 0, 255, seed=1)

    def step():
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(net(images, training=True))
        return tape.gradient(total, net.trainable_variables)[0]

    fns = {"plain_s": tf.function(step), "xla_s": tf.function(step, jit_compile=True)}
    for fn in fns.values():
        for _ in range(warmup):
            fn().numpy()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn().numpy()
            times[key].append(time.perf_counter() - start)
    result = {"backbone": backbone, "size": size, "threads": threads}
    result.update({k: round(statistics.median(v), 4) for k, v in times.items()})
    result["xla_ratio"] = round(result["xla_s"] / result["plain_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="small_resnet,mobilenet_v2,resnet50")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from detkit.utils.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for backbone in args.backbones.split(","):
        print(json.dumps(_measure(tf, backbone, args.size, args.threads, args.warmup, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
