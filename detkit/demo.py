"""`detkit demo`: the whole path on the raccoon photos shipped with the package.

transform -> train (as `detkit train --dataset-dir D --minutes N`: the recipe read from the data) -> evaluate (vs a
learns-nothing baseline) -> predict -> summary page.
Everything is written below one output directory.
"""
from __future__ import annotations

import csv
import glob
import html
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from PIL import Image

from detkit.datasets.readers.common import Source
from detkit.datasets.transform import TransformOptions, transform
from detkit.errors import DetkitError
from detkit.eval.metrics import central_box_baseline, evaluate
from detkit.eval.runner import collect
from detkit.inference import Detector
from detkit.inputs import read_image
from detkit.train.trainer import train_from_options
from detkit.utils import atomic
from detkit.utils.draw import draw_detections, make_grid
from detkit.utils.progress import progress

DATA_PACKAGE = "detkit.data"
# What the demo writes inside its output directory; the folders are removed and rewritten on each run, but
# only in a directory holding the demo's marker file (written by the first run there).
OWNED = ("data", os.path.join("jobs", "demo"), "predictions")
OWNED_FILES = ("summary.html", "metrics.json", "loss_curve.png", "detections_grid.png")
MARKER = ".detkit-demo"


@dataclass
class DemoResult:
    """Where the demo put its outputs and what it measured."""
    output_dir: str
    metrics: dict
    run_dir: str


def _log(message: str) -> None:
    """A log line on stderr."""
    print(f"detkit demo: {message}", file=sys.stderr, flush=True)


def _packaged(*parts: str) -> str:
    """Filesystem path of a packaged data file."""
    return str(resources.files(DATA_PACKAGE).joinpath(*parts))


def _prepare_output(output_dir: str) -> None:
    """Create the output dir; clear the demo's own folders, refusing a directory a previous demo did not make."""
    marker = os.path.join(output_dir, MARKER)
    if not os.path.isfile(marker):
        taken = [name for name in (*OWNED, "jobs", *OWNED_FILES) if os.path.lexists(os.path.join(output_dir, name))]
        if taken:
            raise DetkitError(f"{output_dir}: already holds {', '.join(sorted(set(taken)))}, not written by "
                              "`detkit demo` (no .detkit-demo marker); choose an empty or new --output")
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as exc:
            raise DetkitError(f"{output_dir}: cannot create the output directory ({exc.strerror or exc})") from None
        atomic.write_text(marker, "written by `detkit demo`: it may replace data/, jobs/demo/, predictions/ and "
                                  "its summary files here, nothing else\n")
    for name in OWNED:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)


def _transform(data_dir: str) -> None:
    """Convert the packaged CSV annotations of both splits to TFRecords."""
    for split in ("train", "test"):
        transform(TransformOptions(
            fmt="csv", output_dir=data_dir, splits=[split], overwrite=True, show_progress=True,
            source=Source(annotations=_packaged("raccoon", f"{split}_labels.csv"),
                          images_dir=_packaged("raccoon", "images")),
        ))


def _count_images(split: str) -> int:
    """How many photos a packaged split has (the CSV has one row per box)."""
    with open(_packaged("raccoon", f"{split}_labels.csv"), encoding="utf-8") as fh:
        return len({row["filename"] for row in csv.DictReader(fh)})


def _loss_curve(run_dir: str, path: str) -> list[tuple[int, float]]:
    """Plot losses/total from the run's TensorBoard events to a PNG; return the points."""
    points = []
    for events in sorted(glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))):
        for raw in tf.data.TFRecordDataset(events):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.tag == "losses/total":
                    points.append((event.step, float(tf.make_ndarray(value.tensor))))
    points.sort()
    fig = Figure(figsize=(6, 3.2), dpi=100)  # no pyplot: no global figure state, no display backend
    ax = fig.subplots()
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#d95f02")
    ax.set_xlabel("step")
    ax.set_ylabel("total loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return points


def _predict_held_out(detector, output_dir: str) -> list[str]:
    """Draw detections on the held-out test photos; return the drawn file paths."""
    with open(_packaged("raccoon", "test_labels.csv"), encoding="utf-8") as fh:
        names = sorted({row["filename"] for row in csv.DictReader(fh)})

    out_dir = os.path.join(output_dir, "predictions")
    os.makedirs(out_dir, exist_ok=True)
    drawn, records = [], []
    for name in progress(names, desc="predict", unit="img"):
        image = read_image(_packaged("raccoon", "images", name))

        detections = detector.predict(np.asarray(image))
        records.append({"file": name, "objects": [d.to_json() for d in detections]})
        picture = draw_detections(image, [d.bbox for d in detections], [d.label for d in detections],
                                  [d.prob for d in detections])
        path = os.path.join(out_dir, name)
        atomic.save_image(path, picture, quality=90)
        drawn.append(path)

    atomic.write_text(os.path.join(out_dir, "predictions.jsonl"),
                      "".join(json.dumps(r) + "\n" for r in records))

    grid = make_grid([Image.open(p) for p in drawn[:12]], columns=4, cell_size=256)
    atomic.save_image(os.path.join(output_dir, "detections_grid.png"), grid)
    return drawn


def _summary_page(output_dir: str, metrics: dict) -> str:
    """A one-page HTML summary with metrics, the loss curve and the detection grid."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in [
            ("AP50 (VOC mAP@0.5), detkit", metrics["map50"]),
            ("AP50, fixed central-80% box baseline", metrics["baseline_map50"]),
            ("COCO AP (0.5:0.95), detkit", metrics["coco_ap"]),
            ("COCO AP, baseline", metrics["baseline_coco_ap"]),
        ]
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>detkit demo</title>
<style>body{{font-family:sans-serif;max-width:1050px;margin:2em auto}}td{{padding:2px 12px}}</style></head><body>
<h1>detkit demo: raccoon detector trained from scratch on a CPU</h1>
<p>{metrics['train_images']} training photos, {metrics['test_images']} held-out photos,
{metrics['steps']} steps in {metrics['train_minutes']:.1f} minutes.</p>
<table>{rows}</table>
<h2>Training loss</h2><img src="loss_curve.png" alt="loss curve">
<h2>Detections on held-out photos</h2><img src="detections_grid.png" alt="detections" style="max-width:100%">
<p>All drawn predictions: <code>predictions/</code>. TensorBoard: <code>tensorboard --logdir {html.escape(metrics['run_dir'])}</code></p>
</body></html>
"""
    path = os.path.join(output_dir, "summary.html")

    atomic.write_text(path, page)
    return path


def run_demo(output_dir: str, minutes: float, overrides: tuple[str, ...] = ()) -> DemoResult:
    """Run the whole demo below `output_dir` with `minutes` of training; return the metrics."""
    if minutes <= 0:
        raise DetkitError(f"--minutes must be > 0, got {minutes}")
    start = time.time()
    output_dir = os.path.abspath(output_dir)
    _prepare_output(output_dir)
    data_dir = os.path.join(output_dir, "data")
    _log(f"[1/4] converting the packaged raccoon photos to TFRecords in {data_dir}")
    _transform(data_dir)

    _log(f"[2/4] training Faster R-CNN from scratch for {minutes:g} minutes, as `detkit train --dataset-dir "
         f"{data_dir} --minutes {minutes:g}` does")
    result = train_from_options([], [f"train.job_dir={os.path.join(output_dir, 'jobs')}", "train.run_name=demo",
                                     *overrides], dataset_dir=data_dir, minutes=minutes, from_scratch=True)

    _log("[3/4] evaluating on the held-out photos")
    detector = Detector.from_checkpoint(result.run_dir)
    gts, dets = collect(detector.model, detector.config, data_dir, "test")
    classes = detector.class_names
    scores = evaluate(gts, dets, classes)
    baseline = evaluate(gts, central_box_baseline(gts, 0.8, label=list(range(1, len(classes) + 1))), classes)

    _log("[4/4] drawing detections on the held-out photos")
    _predict_held_out(detector, output_dir)
    _loss_curve(result.run_dir, os.path.join(output_dir, "loss_curve.png"))
    metrics = {
        "map50": scores["map50"], "coco_ap": scores["coco_ap"], "coco_ap75": scores["coco_ap75"],
        "baseline_map50": baseline["map50"], "baseline_coco_ap": baseline["coco_ap"],
        "steps": result.step, "train_minutes": result.minutes, "total_minutes": (time.time() - start) / 60,
        "train_images": _count_images("train"),
        "test_images": len(gts), "run_dir": result.run_dir, "checkpoint": result.checkpoint,
    }

    atomic.write_json(os.path.join(output_dir, "metrics.json"), metrics)
    summary = _summary_page(output_dir, metrics)
    _log(f"AP50 {metrics['map50']:.3f} (fixed-box baseline {metrics['baseline_map50']:.3f}), "
         f"COCO AP {metrics['coco_ap']:.3f} (baseline {metrics['baseline_coco_ap']:.3f}) "
         f"in {metrics['total_minutes']:.1f} minutes")
    _log(f"pictures: {os.path.join(output_dir, 'predictions')}/ and {os.path.join(output_dir, 'detections_grid.png')}")
    _log(f"summary: {summary}")
    _log(f"TensorBoard: tensorboard --logdir {result.run_dir}")
    return DemoResult(output_dir=output_dir, metrics=metrics, run_dir=result.run_dir)
