"""Train examples/raccoon.yml (and the recipe under it) on the raccoon train split and score it on the test split; prints one JSON line.

    python benchmarks/train_raccoon.py --minutes 15 [--raccoon ../shared/datasets/raccoon] [--work DIR]

Checkpoints written along the way (every --curve-every minutes) are evaluated too, giving the
minutes -> mAP@0.5 curve. The fixed central-80% box baseline is scored on the same split.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--raccoon", default=os.path.join(HERE, "..", "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--config", default=os.path.join(HERE, "..", "examples", "raccoon.yml"))
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--curve-every", type=float, default=3.0, help="minutes between evaluated checkpoints")
    parser.add_argument("-o", "--override", action="append", default=[])
    args = parser.parse_args(argv)

    from detkit.utils.tf_quiet import import_tensorflow

    import_tensorflow()
    from detkit import Detector, runs
    from detkit.datasets.readers.common import Source
    from detkit.datasets.transform import TransformOptions, transform
    from detkit.eval.metrics import central_box_baseline, evaluate
    from detkit.eval.runner import collect
    from detkit.train.trainer import train_from_options

    work = args.work or tempfile.mkdtemp(prefix="detkit-bench-")
    data = os.path.join(work, "data")
    for split in ("train", "test"):
        transform(TransformOptions(fmt="csv", output_dir=data, splits=[split], overwrite=True, source=Source(
            annotations=os.path.join(args.raccoon, "data", f"{split}_labels.csv"),
            images_dir=os.path.join(args.raccoon, "images"))))
    # As `detkit train -c CONFIG` does: keys the config leaves unset come from the recipe read from the data.
    result = train_from_options([args.config], [
        f"dataset.dir={data}", f"train.job_dir={os.path.join(work, 'jobs')}", "train.run_name=bench",
        f"train.max_minutes={args.minutes}", f"train.checkpoint_every_minutes={args.curve_every}",
        "train.checkpoint_every_steps=1000000", "train.keep_checkpoints=100", *args.override,
    ])

    curve = []
    state = __import__("tensorflow").train.get_checkpoint_state(runs.layout.checkpoint_dir(result.run_dir))
    for prefix in state.all_model_checkpoint_paths:
        detector = Detector.from_checkpoint(prefix)
        gts, dets = collect(detector.model, detector.config, data, "test", show_progress=False)
        m = evaluate(gts, dets, detector.class_names)
        reader = __import__("tensorflow").train.load_checkpoint(prefix)
        elapsed = float(reader.get_tensor("elapsed/.ATTRIBUTES/VARIABLE_VALUE"))
        curve.append({"minutes": round(elapsed / 60, 2), "step": runs.step_of(prefix),
                      "map50": round(m["map50"], 4), "coco_ap": round(m["coco_ap"], 4)})
    baseline = evaluate(gts, central_box_baseline(gts, 0.8, label=1), detector.class_names)
    final = curve[-1]
    print(json.dumps({
        "map50": final["map50"], "coco_ap": final["coco_ap"], "coco_ap75": round(m["coco_ap75"], 4),
        "minutes": round(result.minutes, 2), "steps": result.step,
        "images_per_second": round(result.images_per_second, 2),
        "baseline_map50": round(baseline["map50"], 4), "baseline_coco_ap": round(baseline["coco_ap"], 4),
        "curve": curve,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
