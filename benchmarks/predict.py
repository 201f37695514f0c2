"""Benchmark `detkit predict` on the shared raccoon photos: prints one JSON line with images_per_second.

    python benchmarks/predict.py [--checkpoint RUN_DIR|CKPT|FILE.tar] [--images DIR] [--batch-size N]

It runs the same code as `detkit predict` (threaded reading with EXIF handling, the model, JSON records) over
every image of the folder, after loading the model and one warm-up image, which are timed separately.
Without --checkpoint it first trains a tiny CPU model (6 steps on the raccoon test split, about 15 s) in a
temporary directory and says so ("trained_tiny_run": true): its speed is that of a tiny network, not of a
real ResNet-50 detector.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACCOON = os.path.normpath(os.path.join(REPO, "..", "shared", "datasets", "raccoon"))



def train_tiny_run(workdir: str) -> str:
    """Convert the raccoon test split and train the tiny model for 6 steps; return its run dir."""
    from click.testing import CliRunner

    from detkit.cli.main import cli
    from detkit.config import load_config
    from detkit.config.tiny import tiny_config_yaml
    from detkit.train.trainer import train

    dataset_dir = os.path.join(workdir, "dataset")
    result = CliRunner().invoke(cli, [
        "dataset", "transform", "--type", "csv",
        "--annotations", os.path.join(RACCOON, "data", "test_labels.csv"),
        "--images-dir", os.path.join(RACCOON, "images"), "--output-dir", dataset_dir, "--split", "test",
    ])
    if result.exit_code != 0:
        raise SystemExit(f"dataset transform failed: {result.output} {result.exception!r}")
    config = os.path.join(workdir, "tiny.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(tiny_config_yaml(dataset_dir, os.path.join(workdir, "jobs"), train={"num_steps": 6}))
    return train(load_config([config])).run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run dir, checkpoint prefix or packed .tar (default: train a tiny run)")
    parser.add_argument("--images", default=os.path.join(RACCOON, "images"), help="folder of images")
    parser.add_argument("--batch-size", type=int, default=None, help="images per model call (default predict.batch_size)")
    parser.add_argument("--min-prob", type=float, default=None, help="score threshold (default predict.min_prob)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    args = parser.parse_args()

    from detkit.utils.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    from detkit import Detector, inputs
    from detkit.inference.predict import BatchPredictor, Counters, predict_images
    from detkit.runs import checkpoint_source

    items = [i for i in inputs.expand_paths([args.images]).items if i.kind == "image"]
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise SystemExit(f"no images in {args.images}")

    with tempfile.TemporaryDirectory(prefix="detkit-bench-") as workdir:
        trained = args.checkpoint is None
        train_seconds = None
        source_arg = args.checkpoint
        if trained:
            start = time.perf_counter()
            source_arg = train_tiny_run(workdir)
            train_seconds = time.perf_counter() - start
        with checkpoint_source(source_arg, (), ()) as source:
            start = time.perf_counter()
            detector = Detector.from_checkpoint(source)
            cfg = detector.config
            predictor = BatchPredictor(detector, args.batch_size or cfg.predict.batch_size,
                                       cfg.predict.min_prob if args.min_prob is None else args.min_prob,
                                       cfg.predict.max_detections, None, None)
            load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            predictor([inputs.read_image_array(items[0].path)])  # traces the model
            warmup_seconds = time.perf_counter() - start

            lines = []
            counters = Counters()
            start = time.perf_counter()
            predict_images(items, predictor, lambda record: lines.append(json.dumps(record)), None, counters,
                           show_progress=False)
            seconds = time.perf_counter() - start

    print(json.dumps({
        "benchmark": "predict",
        "images": counters.images,
        "failed": counters.failed,
        "objects": counters.objects,
        "seconds": round(seconds, 3),
        "images_per_second": round(counters.images / seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "warmup_seconds": round(warmup_seconds, 2),
        "checkpoint": "tiny run trained by this benchmark" if trained else args.checkpoint,
        "trained_tiny_run": trained,
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "backbone": cfg.model.base_network.name,
        "image_min_size": cfg.dataset.image.min_size,
        "image_max_size": cfg.dataset.image.max_size,
        "batch_size": predictor.batch_size,
        "min_prob": predictor.min_prob,
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
