"""Train detkit's recipe (zero-config) on a dataset, score it on the test split; optionally two peers too.

    python benchmarks/train_recipe.py --dataset {raccoon,bccd,cards,small:SET} --minutes 15
        [--torchvision /tmp/tv/bin/python] [--ultralytics /tmp/yolo/bin/python] [--shared ../shared/datasets]
        [--work DIR] [-o key=value ...]
    python benchmarks/train_recipe.py --data DIR ...   (a set small_objects.py wrote, or a transformed folder)

The data: a shared set, a synthetic one of benchmarks/small_objects.py (small:SET makes it in the work directory,
--data DIR takes one made before), each converted by `detkit dataset transform`.

detkit side, exactly as README tells a user: `detkit dataset transform` of the set, then
`detkit train --dataset-dir DATA --minutes N` (no config file: the recipe read from the data), then
`detkit eval --split test --json`.

torchvision side (--torchvision PYTHON, an interpreter with torch + torchvision; never a detkit dependency):
fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None) with its defaults (320-640 px inputs,
horizontal flips as in its reference scripts), SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 2, the
reference script's linear warm-up over the first epoch, torch.set_num_threads(2), for the same minutes on the
same training split (images and boxes exported from detkit's TFRecords). Its test-split detections are dumped to
JSON and scored here with detkit.eval.metrics.evaluate, the evaluator `detkit eval` uses.

Ultralytics side (--ultralytics PYTHON, an interpreter with ultralytics; never a detkit dependency): YOLO11n built
from yolo11n.yaml (no weights), its defaults but time= the same minutes, 2 torch threads, workers=0, val=False,
plots=False, amp=False, offline (benchmarks/README.md says why each); trained on the same split exported to the
YOLO layout, its test-split detections (conf 0.001, as many per image as detkit keeps) scored as torchvision's.

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
sys.path.insert(0, HERE)
from shared_sets import DATASETS, shared_layout  # noqa: E402  (beside this script)
REPO = os.path.dirname(HERE)
# The detkit children's model cache (--detkit-home); None: an empty one.
DETKIT_HOME = None


# ---------------------------------------------------------------- conversion (the shared layouts)
def csv_layout(folder: str) -> tuple[str, list[tuple[dict, list[str]]], str]:
    """The layout of a folder with train.csv + train/ and test.csv + test/ (benchmarks/small_objects.py writes them)."""
    return "csv", [({"data_dir": folder}, ["train", "test"])], "train"


def transform_commands(layout: tuple[str, list[tuple[dict, list[str]]], str]) -> list[list[str]]:
    """`detkit dataset transform` argument lists (without --output-dir) for a layout."""
    fmt, sources, _ = layout
    return [["--type", fmt, *[a for key, value in source.items() for a in ("--" + key.replace("_", "-"), value)],
             *[a for s in splits for a in ("--split", s)]] for source, splits in sources]


def detkit_command(*args: str) -> list[str]:
    """`python -m detkit ARGS` with this interpreter."""
    return [sys.executable, "-m", "detkit", *args]


def _env() -> dict:
    """The environment for detkit children: this checkout's detkit first, and a model cache of their own, empty
    unless --detkit-home says otherwise (`detkit train --dataset-dir` fine-tunes a downloaded detector: with none
    it trains from scratch, as the peers do)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["DETKIT_HOME"] = DETKIT_HOME or tempfile.mkdtemp(prefix="detkit-bench-home-")
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
    from detkit.runs.config import load_run_config

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
    max_detections = load_run_config(run_dir).model.postprocess.max_total
    finished = [line for line in open(os.path.join(work, "detkit-train.log"), encoding="utf-8", errors="replace")
                .read().replace("\r", "\n").splitlines() if "finished at step" in line]
    return {"map50": round(metrics["map50"], 4), "coco_ap": round(metrics["coco_ap"], 4), "step": metrics["step"],
            "wall_seconds": round(seconds, 1), "finished": finished[-1].strip() if finished else "",
            "recipe": {k: chosen[k] for k in ("model.architecture", "model.fpn.body_strides", "dataset.image.max_size",
                                              "dataset.image.tiles.size", "model.anchors.sizes", "model.fpn.anchor_sizes",
                                              "model.anchors.ratios", "model.rcnn.target.minibatch_size",
                                              "model.postprocess.max_total", "dataset.repeat_factor_threshold",
                                              "train.init_from") if k in chosen},
            "max_detections": max_detections, "run_dir": run_dir}


# ---------------------------------------------------------------- the splits exported for the peers
_EXPORTED: dict = {}


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


def exported(data: str, split: str, work: str) -> list[dict]:
    """A split exported once to WORK/export/images/SPLIT (the YOLO layout's images folder), shared by the peers."""
    if (data, split) not in _EXPORTED:
        _EXPORTED[data, split] = export_split(data, split, os.path.join(work, "export", "images", split))
    return _EXPORTED[data, split]


def score(data: str, test: list[dict], detections: list[dict]) -> dict:
    """detkit's evaluator (the one `detkit eval` uses) on a peer's test detections, in original pixels."""
    from detkit.datasets.classes import read_classes
    from detkit.eval.metrics import Detections, GroundTruth, evaluate

    gts = [GroundTruth(image_id=str(i), boxes=t["boxes"], labels=t["labels"], difficult=t["difficult"],
                       iscrowd=t["crowd"], width=t["width"], height=t["height"]) for i, t in enumerate(test)]
    dets = [Detections(image_id=str(i), boxes=d["boxes"], labels=d["labels"], scores=d["scores"])
            for i, d in enumerate(detections)]
    metrics = evaluate(gts, dets, read_classes(data))
    return {"map50": round(metrics["map50"], 4), "coco_ap": round(metrics["coco_ap"], 4)}


# ---------------------------------------------------------------- torchvision side
def train_torchvision(python: str, data: str, split: str, minutes: float, work: str) -> dict:
    """Export the splits, train and predict in the torch interpreter, score here with detkit's evaluator."""
    from detkit.datasets.classes import read_classes

    train, test = exported(data, split, work), exported(data, "test", work)
    os.makedirs(os.path.join(work, "tv"), exist_ok=True)
    spec = {"num_classes": len(read_classes(data)), "minutes": minutes, "train": train,
            "test": [t["path"] for t in test], "output": os.path.join(work, "tv", "detections.json")}
    spec_path = os.path.join(work, "tv", "spec.json")
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    run_logged([python, os.path.abspath(__file__), "--torchvision-child", spec_path],
               os.path.join(work, "torchvision.log"))
    with open(spec["output"], encoding="utf-8") as fh:
        result = json.load(fh)
    return {**score(data, test, result["detections"]), "step": result["steps"],
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


# ---------------------------------------------------------------- Ultralytics side
# Ultralytics validates on its val set after the last epoch (and on best.pt again); a few training photos keep that
# cheap. Its default, validating every epoch and keeping the best, would either spend the minutes on validation or,
# pointed at the test split, choose the checkpoint on the test labels.
YOLO_VAL_IMAGES = 16
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request",
                  "http.client.connect")


def write_yolo_labels(items: list[dict], folder: str) -> None:
    """One LABELS/STEM.txt per image: `class cx cy w h`, 0-based class, coordinates in [0, 1] (boxes clipped)."""
    os.makedirs(folder, exist_ok=True)
    for item in items:
        w, h = item["width"], item["height"]
        lines = []
        for (x0, y0, x1, y1), label in zip(item["boxes"], item["labels"]):
            x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
            y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
            if x1 > x0 and y1 > y0:  # Ultralytics drops a whole image over one out-of-range label
                lines.append(f"{label - 1} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                             f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
        stem = os.path.splitext(os.path.basename(item["path"]))[0]
        with open(os.path.join(folder, stem + ".txt"), "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))


def yolo_dataset(data: str, split: str, work: str) -> str:
    """The converted splits in the YOLO layout (images/SPLIT, labels/SPLIT, data.yaml); returns data.yaml's path."""
    from detkit.datasets.classes import read_classes

    root = os.path.join(work, "export")
    train = exported(data, split, work)
    write_yolo_labels(train, os.path.join(root, "labels", split))
    write_yolo_labels(exported(data, "test", work), os.path.join(root, "labels", "test"))
    with open(os.path.join(root, "val.txt"), "w", encoding="utf-8") as fh:
        fh.write("".join(t["path"] + "\n" for t in train[:YOLO_VAL_IMAGES]))
    path = os.path.join(root, "data.yaml")
    with open(path, "w", encoding="utf-8") as fh:  # JSON is YAML, and quotes any class name safely
        json.dump({"path": root, "train": f"images/{split}", "val": "val.txt", "test": "images/test",
                   "names": read_classes(data)}, fh)
    return path


def train_ultralytics(python: str, data: str, split: str, minutes: float, work: str, max_det: int,
                      imgsz: int) -> dict:
    """Export the YOLO layout, train and predict in the Ultralytics interpreter, score here with detkit's evaluator."""
    folder = os.path.join(work, "yolo")
    os.makedirs(os.path.join(folder, "config"), exist_ok=True)
    test = exported(data, "test", work)
    spec = {"data": yolo_dataset(data, split, work), "minutes": minutes, "imgsz": imgsz, "max_det": max_det,
            "conf": 0.001, "threads": 2, "dir": folder, "test": [t["path"] for t in test],
            "output": os.path.join(folder, "detections.json")}
    spec_path = os.path.join(folder, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=os.path.join(folder, "config"), OMP_NUM_THREADS="2",
               MPLCONFIGDIR=os.path.join(folder, "matplotlib"))
    run_logged([python, os.path.abspath(__file__), "--ultralytics-child", spec_path],
               os.path.join(work, "ultralytics.log"), env)
    with open(spec["output"], encoding="utf-8") as fh:
        result = json.load(fh)
    return {**score(data, test, result.pop("detections")), **result}


def ultralytics_child(spec_path: str) -> None:
    """In the Ultralytics interpreter: train yolo11n from its YAML (no weights) for the minutes, predict the test split.

    An audit hook records every network connection, name lookup and URL request the run attempts, and every
    subprocess it starts; files it leaves outside its run folder are listed."""
    import shutil

    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    os.dup2(2, 1)  # Ultralytics logs to stdout: send it to the log with the rest
    sys.stdout = sys.stderr
    network: list[str] = []
    subprocesses: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if event == "subprocess.Popen":
            command = args[1] if args[1] is not None else args[0]
            subprocesses.append((command if isinstance(command, (str, bytes)) else " ".join(map(str, command)))[:200])
        elif event in NETWORK_EVENTS:
            if event == "socket.connect" and getattr(args[0], "family", None) not in (2, 10):  # AF_INET, AF_INET6
                return
            network.append(f"{event} {args[1:] if event == 'socket.connect' else args}"[:200])

    sys.addaudithook(audit)
    os.chdir(spec["dir"])  # a download that slipped through would land here and be listed
    import matplotlib
    import torch
    import ultralytics
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO
    from ultralytics.utils import USER_CONFIG_DIR

    # check_font() fetches Arial.ttf (for plots) unless its config dir has one: matplotlib's own font stands in.
    font = os.path.join(USER_CONFIG_DIR, "Arial.ttf")
    if not os.path.exists(font):
        shutil.copy(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), font)
    before = {os.path.join(d, f) for d, _, files in os.walk(".") for f in files}
    torch_utils.NUM_THREADS = spec["threads"]  # its default is cpu_count - 1 threads: 1 on a 2-core machine
    model = YOLO("yolo11n.yaml")
    clock = {"batches": 0}

    def on_train_start(trainer) -> None:
        clock["start"] = time.time()

    def on_train_batch_start(trainer) -> None:  # the batch that runs out the clock is trained, then the loop ends
        clock["batches"] += 1

    def on_train_epoch_end(trainer) -> None:  # before its validation
        clock["end"] = time.time()

    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_start", on_train_batch_start)
    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    model.train(data=spec["data"], time=spec["minutes"] / 60, imgsz=spec["imgsz"], device="cpu", workers=0,
                amp=False, plots=False, val=False, pretrained=False, project=os.path.join(spec["dir"], "runs"),
                name="train", exist_ok=True, seed=0)
    trainer = model.trainer
    threads = torch.get_num_threads()
    detections = []
    for path in spec["test"]:
        boxes = model.predict(path, imgsz=spec["imgsz"], conf=spec["conf"], max_det=spec["max_det"], device="cpu",
                              verbose=False)[0].boxes
        detections.append({"boxes": boxes.xyxy.tolist(), "labels": [int(c) + 1 for c in boxes.cls.tolist()],
                           "scores": boxes.conf.tolist()})
    seconds = clock.get("end", 0.0) - clock.get("start", 0.0)
    after = {os.path.join(d, f) for d, _, files in os.walk(".") for f in files}
    new = sorted(f for f in after - before if not f.startswith(("./runs/", "./matplotlib/")))
    with open(spec["output"], "w", encoding="utf-8") as fh:
        json.dump({"step": clock["batches"], "batch": trainer.batch_size, "epochs": trainer.epoch + 1,
                   "images_per_second": round(clock["batches"] * trainer.batch_size / max(seconds, 1e-9), 2),
                   "train_seconds": round(seconds, 1), "imgsz": spec["imgsz"], "conf": spec["conf"],
                   "max_det": spec["max_det"], "torch_threads": threads, "ultralytics": ultralytics.__version__,
                   "torch": torch.__version__, "network_attempts": network, "subprocesses": subprocesses,
                   "new_files": new,
                   "detections": detections}, fh)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help=f"a shared set ({', '.join(DATASETS)}) or a synthetic one made in the work "
                                          "directory by small_objects.py: small:SET (e.g. small:crowded)")
    parser.add_argument("--data", metavar="DIR", help="instead of --dataset: a folder with train.csv + train/ and "
                        "test.csv + test/ (small_objects.py writes OUT/SET so), or one `detkit dataset transform` wrote")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--seed", type=int, default=0, help="seed of a small:SET dataset")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--torchvision", metavar="PYTHON", default=None,
                        help="also train torchvision's Faster R-CNN in this interpreter (e.g. /tmp/tv/bin/python)")
    parser.add_argument("--ultralytics", metavar="PYTHON", default=None,
                        help="also train YOLO11n from scratch with this interpreter (e.g. /tmp/yolo/bin/python)")
    parser.add_argument("--ultralytics-imgsz", type=int, default=640, help="its imgsz (default: its own, 640)")
    parser.add_argument("--skip-detkit", action="store_true", help="only the peers")
    parser.add_argument("--detkit-home", default=None, help="the model cache detkit sees (default: an empty one, so "
                        "it trains from scratch; one holding a downloaded detector makes it fine-tune that)")
    parser.add_argument("-o", "--override", action="append", default=[], help="extra -o for detkit train")
    parser.add_argument("--torchvision-child", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--ultralytics-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DETKIT_HOME
    DETKIT_HOME = args.detkit_home
    if args.torchvision_child:
        torchvision_child(args.torchvision_child)
        return
    if args.ultralytics_child:
        ultralytics_child(args.ultralytics_child)
        return
    if bool(args.dataset) == bool(args.data):
        parser.error("give one of --dataset and --data")
    sys.path.insert(0, REPO)  # this checkout's detkit, as in the children
    name = args.dataset or os.path.basename(os.path.normpath(args.data))
    work = args.work or tempfile.mkdtemp(prefix=f"detkit-recipe-{name.replace(':', '-')}-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    if args.data and os.path.exists(os.path.join(args.data, "classes.json")):
        data, split = os.path.abspath(args.data), "train"
    else:
        if args.data:
            layout = csv_layout(os.path.abspath(args.data))
        elif args.dataset.startswith("small:"):
            from small_objects import make_set  # beside this script

            layout = csv_layout(make_set(args.dataset[len("small:"):], os.path.join(work, "small"),
                                         os.path.abspath(args.shared), args.seed, overwrite=True)["dir"])
        else:
            layout = shared_layout(args.dataset, os.path.abspath(args.shared))
        split = layout[2]
        for i, command in enumerate(transform_commands(layout)):
            run_logged(detkit_command("dataset", "transform", *command, "--output-dir", data, "--overwrite"),
                       os.path.join(work, f"transform-{i}.log"), _env())
    result: dict = {"dataset": name, "minutes": args.minutes, "train_split": split, "work": work}
    max_det = 300  # detkit's default model.postprocess.max_total, and Ultralytics' own default
    if not args.skip_detkit:
        result["detkit"] = train_detkit(data, split, args.minutes, work, args.override)
        max_det = result["detkit"]["max_detections"]  # Ultralytics keeps as many per image as detkit did
    if args.torchvision:
        result["torchvision"] = train_torchvision(args.torchvision, data, split, args.minutes, work)
    if args.ultralytics:
        result["ultralytics"] = train_ultralytics(args.ultralytics, data, split, args.minutes, work, max_det,
                                                  args.ultralytics_imgsz)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
