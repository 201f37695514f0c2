"""Train detkit's recipe (zero-config) on a shared dataset, score it on the test split; optionally torchvision too.

    python benchmarks/train_recipe.py --dataset {raccoon,bccd,cards} --minutes 15 [--torchvision /tmp/tv/bin/python]
        [--shared ../shared/datasets] [--work DIR] [-o key=value ...]

detkit side, exactly as README tells a user: `detkit dataset transform` of the shared set, then
`detkit train --dataset-dir DATA --minutes N` (no config file: the recipe read from the data), then
`detkit eval --split test --json`.

torchvision side (--torchvision PYTHON, an interpreter with torch + torchvision; never a detkit dependency):
fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None) with its defaults (320-640 px inputs,
horizontal flips as in its reference scripts), SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 2, the
reference script's linear warm-up over the first epoch, torch.set_num_threads(2), for the same minutes on the
same training split (images and boxes exported from detkit's TFRecords). Its test-split detections are dumped to
JSON and scored here with detkit.eval.metrics.evaluate, the evaluator `detkit eval` uses.

Prints one JSON object: AP50 (VOC mAP@0.5, all-point) and COCO AP (0.5:0.95) of each side, steps, images/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATASETS = ("raccoon", "bccd", "cards")


# ---------------------------------------------------------------- conversion (the shared layouts)
def transform_commands(name: str, shared: str, out: str) -> tuple[list[list[str]], str]:
    """(`detkit dataset transform` argument lists, training split name) for one shared dataset."""
    root = os.path.join(shared, name)
    if name == "raccoon":  # CSV per split, one images/ folder
        return [["--type", "csv", "--annotations", os.path.join(root, "data", f"{s}_labels.csv"),
                 "--images-dir", os.path.join(root, "images"), "--split", s] for s in ("train", "test")], "train"
    if name == "bccd":  # VOCdevkit with ImageSets/Main: train on trainval (train + val), test on test
        return [["--type", "voc", "--data-dir", root, "--split", "trainval", "--split", "test"]], "trainval"
    if name == "cards":  # labelImg: each photo's XML beside it, one folder per split
        return [["--type", "voc", "--data-dir", os.path.join(root, s), "--split", s] for s in ("train", "test")], "train"
    raise SystemExit(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def detkit_command(*args: str) -> list[str]:
    """`python -m detkit ARGS` with this interpreter."""
    return [sys.executable, "-m", "detkit", *args]


def _env() -> dict:
    """The environment for detkit children: this checkout's detkit first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_logged(command: list[str], log_path: str, env: dict | None = None) -> str:
    """Run a command, copying its stderr live to ours and to log_path; its stdout is returned."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

        def copy() -> None:
            while True:
                chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(4096)
                if not chunk:
                    return
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
                log.write(chunk)

        copier = threading.Thread(target=copy, daemon=True)
        copier.start()
        out = proc.stdout.read()
        proc.wait()
        copier.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {proc.returncode}); see {log_path}")
    return out.decode()


# ---------------------------------------------------------------- detkit side
def train_detkit(data: str, split: str, minutes: float, work: str, overrides: list[str]) -> dict:
    """Zero-config `detkit train` then `detkit eval` on the test split."""
    job_dir = os.path.join(work, "jobs")
    args = ["train", "--dataset-dir", data, "--minutes", str(minutes), "-o", f"train.job_dir={job_dir}",
            "-o", "train.run_name=recipe"]
    if split != "train":
        args += ["-o", f"dataset.split={split}"]
    for o in overrides:
        args += ["-o", o]
    start = time.time()
    run_dir = run_logged(detkit_command(*args), os.path.join(work, "detkit-train.log"), _env()).strip().splitlines()[-1]
    seconds = time.time() - start
    out = run_logged(detkit_command("eval", "--checkpoint", run_dir, "--split", "test", "--dataset-dir", data,
                                    "--json", "--no-record", "--no-progress"),
                     os.path.join(work, "detkit-eval.log"), _env())
    metrics = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(run_dir, "recipe.json"), encoding="utf-8") as fh:
        recipe = json.load(fh)
    chosen = {k: v for c in recipe["choices"] for k, v in c["applied"].items()}
    finished = [line for line in open(os.path.join(work, "detkit-train.log"), encoding="utf-8", errors="replace")
                .read().replace("\r", "\n").splitlines() if "finished at step" in line]
    return {"map50": round(metrics["map50"], 4), "coco_ap": round(metrics["coco_ap"], 4), "step": metrics["step"],
            "wall_seconds": round(seconds, 1), "finished": finished[-1].strip() if finished else "",
            "recipe": {k: chosen.get(k) for k in ("dataset.image.max_size", "model.anchors.sizes", "model.anchors.ratios",
                                                  "model.rcnn.target.minibatch_size", "model.postprocess.max_total",
                                                  "dataset.repeat_factor_threshold")},
            "run_dir": run_dir}


# ---------------------------------------------------------------- torchvision side
def export_split(data: str, split: str, folder: str) -> list[dict]:
    """Images (original bytes) and pixel boxes of a converted split, for a process without TensorFlow."""
    from detkit.datasets.tfrecord import iter_records

    os.makedirs(folder, exist_ok=True)
    items = []
    for i, rec in enumerate(iter_records(data, split, with_images=True)):
        w, h = int(rec["width"]), int(rec["height"])
        path = os.path.join(folder, f"{i:05d}.{'png' if rec['format'] == b'png' else 'jpg'}")
        with open(path, "wb") as fh:
            fh.write(rec["image"])
        items.append({"path": path, "width": w, "height": h,
                      "boxes": [[float(x0) * w, float(y0) * h, float(x1) * w, float(y1) * h]
                                for x0, y0, x1, y1 in rec["boxes"]],
                      "labels": [int(v) for v in rec["labels"]], "difficult": [bool(v) for v in rec["difficult"]],
                      "crowd": [bool(v) for v in rec["is_crowd"]]})
    return items


def train_torchvision(python: str, data: str, split: str, minutes: float, work: str) -> dict:
    """Export the splits, train and predict in the torch interpreter, score here with detkit's evaluator."""
    from detkit.datasets.classes import read_classes
    from detkit.eval.metrics import Detections, GroundTruth, evaluate

    classes = read_classes(data)
    train = export_split(data, split, os.path.join(work, "tv", "train"))
    test = export_split(data, "test", os.path.join(work, "tv", "test"))
    spec = {"num_classes": len(classes), "minutes": minutes, "train": train, "test": [t["path"] for t in test],
            "output": os.path.join(work, "tv", "detections.json")}
    spec_path = os.path.join(work, "tv", "spec.json")
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    run_logged([python, os.path.abspath(__file__), "--torchvision-child", spec_path],
               os.path.join(work, "torchvision.log"))
    with open(spec["output"], encoding="utf-8") as fh:
        result = json.load(fh)
    gts = [GroundTruth(image_id=str(i), boxes=t["boxes"], labels=t["labels"], difficult=t["difficult"],
                       iscrowd=t["crowd"], width=t["width"], height=t["height"]) for i, t in enumerate(test)]
    dets = [Detections(image_id=str(i), boxes=d["boxes"], labels=d["labels"], scores=d["scores"])
            for i, d in enumerate(result["detections"])]
    metrics = evaluate(gts, dets, classes)
    return {"map50": round(metrics["map50"], 4), "coco_ap": round(metrics["coco_ap"], 4), "step": result["steps"],
            "images_per_second": round(result["images_per_second"], 2), "diverged": result["diverged"]}


def torchvision_child(spec_path: str) -> None:
    """In the torch interpreter: train fasterrcnn_mobilenet_v3_large_320_fpn for the minutes, predict the test images."""
    import random

    import torch
    from PIL import Image
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    from torchvision.transforms.functional import pil_to_tensor

    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    random.seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=spec["num_classes"] + 1)

    def load(path: str) -> torch.Tensor:
        with Image.open(path) as im:
            return pil_to_tensor(im.convert("RGB"))  # uint8, kept in memory; floats made per step

    images = [load(t["path"]) for t in spec["train"]]
    targets = []
    for t in spec["train"]:
        boxes = torch.tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # torchvision refuses empty boxes
        targets.append({"boxes": boxes[keep], "labels": torch.tensor(t["labels"], dtype=torch.int64)[keep]})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    batch = 2
    # torchvision's references/detection/train.py: linear warm-up from 0.001x over the first epoch (<= 1000 steps).
    warmup = max(1, min(1000, len(images) // batch - 1))
    model.train()
    steps, seen, diverged = 0, 0, False
    deadline = time.time() + spec["minutes"] * 60
    start = time.time()
    while time.time() < deadline and not diverged:
        order = list(range(len(images)))
        random.shuffle(order)
        for j in range(0, len(order) - batch + 1, batch):
            if time.time() >= deadline:
                break
            xs, ys = [], []
            for k in order[j:j + batch]:
                x, y = images[k].float() / 255.0, dict(targets[k])
                if random.random() < 0.5:
                    x = x.flip(-1)
                    b = y["boxes"].clone()
                    b[:, [0, 2]] = x.shape[-1] - y["boxes"][:, [2, 0]]
                    y["boxes"] = b
                xs.append(x)
                ys.append(y)
            factor = 0.001 + (1 - 0.001) * min(steps / warmup, 1.0)
            for group in optimizer.param_groups:
                group["lr"] = 0.01 * factor
            loss = sum(model(xs, ys).values())
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            seen += len(xs)
            if steps % 50 == 0:
                rate = seen / (time.time() - start)
                print(f"torchvision: step {steps}, loss {float(loss):.3f}, {rate:.1f} images/s", file=sys.stderr,
                      flush=True)
    ips = seen / max(time.time() - start, 1e-9)
    model.eval()
    detections = []
    with torch.no_grad():
        for path in spec["test"]:
            out = model([load(path).float() / 255.0])[0]
            detections.append({"boxes": out["boxes"].tolist(), "labels": out["labels"].tolist(),
                               "scores": out["scores"].tolist()})
    with open(spec["output"], "w", encoding="utf-8") as fh:
        json.dump({"steps": steps, "images_per_second": ips, "diverged": diverged, "detections": detections}, fh)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--torchvision", metavar="PYTHON", default=None,
                        help="also train torchvision's Faster R-CNN in this interpreter (e.g. /tmp/tv/bin/python)")
    parser.add_argument("--skip-detkit", action="store_true", help="only the torchvision side")
    parser.add_argument("-o", "--override", action="append", default=[], help="extra -o for detkit train")
    parser.add_argument("--torchvision-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torchvision_child:
        torchvision_child(args.torchvision_child)
        return
    if not args.dataset:
        parser.error("--dataset is required")
    sys.path.insert(0, REPO)  # this checkout's detkit, as in the children
    work = args.work or tempfile.mkdtemp(prefix=f"detkit-recipe-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    commands, split = transform_commands(args.dataset, os.path.abspath(args.shared), data)
    for i, command in enumerate(commands):
        run_logged(detkit_command("dataset", "transform", *command, "--output-dir", data, "--overwrite"),
                   os.path.join(work, f"transform-{i}.log"), _env())
    result: dict = {"dataset": args.dataset, "minutes": args.minutes, "train_split": split, "work": work}
    if not args.skip_detkit:
        result["detkit"] = train_detkit(data, split, args.minutes, work, args.override)
    if args.torchvision:
        result["torchvision"] = train_torchvision(args.torchvision, data, split, args.minutes, work)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
