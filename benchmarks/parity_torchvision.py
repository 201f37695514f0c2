"""Parity of detkit's fpn models with torchvision's Faster R-CNNs, on the same weights; prints JSON per arch.

    python benchmarks/parity_torchvision.py --torch-python /tmp/tv/bin/python [--archs A B ...]
        [--train-steps N] [--work-dir DIR] [--reuse]

The torch side (benchmarks/parity_torchvision_torch.py, run with --torch-python; torch is never imported
here) builds each arch with a fixed seed (weights=None, weights_backbone=None, 2 classes), trains it
`--train-steps` SGD steps on the raccoon train split so that its scores mean something, saves its state dict
(.pth and .npz) and every stage of its inference on the raccoon test photos. This side builds the detkit
model of the arch, loads the same weights, runs the same photos and reports, per arch:
- the largest differences stage by stage: pyramid features (first --feature-images photos; absolute and
  relative to the largest torch value), RPN objectness logits, proposals (same rank; and the share of
  torchvision's proposals detkit has at IoU >= 0.99), final boxes (original-image pixels) and scores of
  matched detections;
- the share of torchvision's detections (score >= 0.1) detkit reproduces (same label, IoU >= 0.98, score
  within 0.01), and the other way round;
- COCO AP of both against the test boxes;
- seconds per image of inference at the arch's own size (resize included on both sides) and of one training
  step (batch 1, forward + backward + SGD update), both sides on the same weights and 2 threads.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn")


def _data_dir() -> str:
    """The raccoon CSV split folder (the packaged copy)."""
    return os.path.join(ROOT, "detkit", "data", "raccoon")


def _read_split(data_dir: str, split: str) -> list[tuple[str, np.ndarray]]:
    """(image path, boxes) per image, in file order (the torch side reads the same way)."""
    boxes: dict[str, list] = {}
    with open(os.path.join(data_dir, f"{split}_labels.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            boxes.setdefault(row["filename"], []).append(
                [float(row["xmin"]), float(row["ymin"]), float(row["xmax"]), float(row["ymax"])])
    return [(os.path.join(data_dir, "images", name), np.asarray(b, np.float32)) for name, b in boxes.items()]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N, M] of (x1, y1, x2, y2) boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros([len(a), len(b)])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _reproduced(src: dict, dst: dict, min_score: float = 0.1) -> tuple[int, int, list, list]:
    """How many of src's detections with score >= min_score dst has (same label, IoU >= 0.98, score +- 0.01),
    the (box diff, score diff) of each src detection's best same-label partner, and the [w, h] (px) of each
    src detection dst lacks."""
    keep = src["scores"] >= min_score
    boxes, labels, scores = src["boxes"][keep], src["labels"][keep], src["scores"][keep]
    iou = _iou(boxes, dst["boxes"])
    hits, diffs, missed = 0, [], []
    for i in range(len(boxes)):
        same = (dst["labels"] == labels[i])
        ok = same & (iou[i] >= 0.98) & (np.abs(dst["scores"] - scores[i]) <= 0.01)
        hits += bool(ok.any())
        if not ok.any():
            missed.append([round(float(boxes[i][2] - boxes[i][0]), 2), round(float(boxes[i][3] - boxes[i][1]), 2)])
        if same.any():
            j = int(np.argmax(np.where(same, iou[i], -1)))
            diffs.append((float(np.abs(dst["boxes"][j] - boxes[i]).max()), float(abs(dst["scores"][j] - scores[i]))))
    return hits, len(boxes), diffs, missed


def run_torch_side(args, archs: list[str]) -> None:
    """The torch script in its own interpreter; its progress goes to our stderr."""
    cmd = [args.torch_python, os.path.join(HERE, "parity_torchvision_torch.py"), "--data-dir", _data_dir(),
           "--out-dir", args.work_dir, "--archs", *archs, "--train-steps", str(args.train_steps), "--lr", str(args.lr), "--state-from", args.state_from,
           "--feature-images", str(args.feature_images), "--threads", str(args.threads),
           "--limit-images", str(args.limit_images), "--time-images", str(args.time_images),
           "--time-train-steps", str(args.time_train_steps)]
    subprocess.run(cmd, check=True)


def _load_model(arch: str, work_dir: str):
    """(Detector, how it was loaded): `detkit checkpoint import` of the torch side's .pth."""
    from detkit.inference.detector import Detector
    from detkit.pretrained.importer import import_checkpoint

    run_dir = os.path.join(work_dir, f"{arch}-run")
    import_checkpoint(os.path.join(work_dir, f"{arch}.pth"), run_dir, arch=arch, classes="raccoon",
                      overwrite=os.path.exists(run_dir))
    return Detector.from_checkpoint(run_dir), "detkit checkpoint import (.pth)"


def _stage_diffs(model, cfg, image: np.ndarray, ref: dict, stats: dict) -> None:
    """Run the model's stages on one photo as the Detector resizes it and fold the differences into stats."""
    resized, new_hw = model.transform.resize(image)
    if list(new_hw.numpy()) != list(ref["resized_hw"]):
        stats["resized_size_mismatches"] += 1
    out = model.stages(resized[None], new_hw[None])

    def fold(key, value):
        stats[key] = max(stats.get(key, 0.0), float(value))

    for level, features in enumerate(out["features"]):
        name = f"features_{level}"
        if name in ref:
            a, b = features[0].numpy(), ref[name]
            fold("features_max_abs_diff", np.abs(a - b).max())
            fold("features_max_rel_diff", np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))
    for level, logits in enumerate(out["objectness"]):
        fold("objectness_max_abs_diff", np.abs(logits[0].numpy() - ref[f"objectness_{level}"]).max())
    valid = out["proposal_valid"][0].numpy()
    mine = out["proposals"][0].numpy()[valid]
    theirs = ref["proposals"]
    scores = out["proposal_scores"][0].numpy()[valid]
    stats["proposal_count_diff"] = max(stats.get("proposal_count_diff", 0), abs(len(mine) - len(theirs)))
    # Equal scores may come out in either order, so each torchvision proposal is compared with its best match.
    iou = _iou(theirs, mine)
    stats["proposals_total"] += len(theirs)
    if len(mine) and len(theirs):
        best = iou.argmax(axis=1)
        matched = iou.max(axis=1) >= 0.99
        stats["proposals_matched"] += int(matched.sum())
        fold("proposals_max_abs_diff", np.abs(mine[best] - theirs)[matched].max(initial=0.0))
        fold("proposal_scores_max_abs_diff", np.abs(scores[best] - ref["proposal_scores"])[matched].max(initial=0.0))


def compare_arch(arch: str, args) -> dict:
    """All figures of one arch."""
    from PIL import Image

    from detkit.eval.coco_metrics import coco_metrics
    from detkit.eval.metrics import Detections, GroundTruth
    detector, loaded_by = _load_model(arch, args.work_dir)
    cfg = detector.config
    test_items = _read_split(_data_dir(), "test")
    if args.limit_images:
        test_items = test_items[:args.limit_images]
    stats = {"resized_size_mismatches": 0, "proposals_total": 0, "proposals_matched": 0}
    t_hits = t_total = d_hits = d_total = 0
    t_missed: list = []
    d_missed: list = []
    box_diff = score_diff = 0.0
    gts, dets_tv, dets_dk = [], [], []
    images = []
    for i, (path, gt_boxes) in enumerate(test_items):
        ref = dict(np.load(os.path.join(args.work_dir, f"{arch}-{i:03d}.npz")))
        image = np.asarray(Image.open(path).convert("RGB"))
        images.append(image)
        _stage_diffs(detector.model, cfg, image, ref, stats)
        found = detector.predict(image, min_prob=0.0, max_detections=100)
        mine = {"boxes": np.asarray([d.bbox for d in found], np.float32).reshape(-1, 4),
                "labels": np.asarray([d.label_id for d in found], np.int64),
                "scores": np.asarray([d.prob for d in found], np.float32)}
        theirs = {"boxes": ref["boxes"].reshape(-1, 4), "labels": ref["labels"].astype(np.int64),
                  "scores": ref["scores"]}
        h, n, diffs, missed = _reproduced(theirs, mine)
        t_hits, t_total = t_hits + h, t_total + n
        t_missed += missed
        for b, s in diffs:
            box_diff, score_diff = max(box_diff, b), max(score_diff, s)
        h, n, _, missed = _reproduced(mine, theirs)
        d_hits, d_total = d_hits + h, d_total + n
        d_missed += missed
        name = os.path.basename(path)
        gts.append(GroundTruth(name, gt_boxes, np.ones(len(gt_boxes), np.int64), width=image.shape[1],
                               height=image.shape[0]))
        dets_tv.append(Detections(name, theirs["boxes"], theirs["labels"], theirs["scores"]))
        dets_dk.append(Detections(name, mine["boxes"], mine["labels"], mine["scores"]))
        if (i + 1) % 10 == 0:
            print(f"[detkit] {arch}: {i + 1}/{len(test_items)} photos", file=sys.stderr, flush=True)
    ap_tv = coco_metrics(gts, dets_tv, [1])["ap"]
    ap_dk = coco_metrics(gts, dets_dk, [1])["ap"]
    result = {
        "arch": arch,
        "weights_loaded_by": loaded_by,
        "test_photos": len(test_items),
        "stages": {
            **{k: v for k, v in stats.items() if k not in ("proposals_total", "proposals_matched")},
            "proposals_matched_share": round(stats["proposals_matched"] / max(stats["proposals_total"], 1), 4),
            "final_boxes_max_abs_diff_px": box_diff,
            "final_scores_max_abs_diff": score_diff,
        },
        "torchvision_detections": t_total,
        "reproduced_by_detkit": round(t_hits / max(t_total, 1), 4),
        "detkit_detections": d_total,
        "reproduced_by_torchvision": round(d_hits / max(d_total, 1), 4),
        # [w, h] in original-image pixels of each detection the other side lacks (e.g. sub-pixel slivers).
        "torchvision_detections_missed_wh": t_missed,
        "detkit_detections_missed_wh": d_missed,
        "coco_ap_torchvision": round(ap_tv, 4),
        "coco_ap_detkit": round(ap_dk, 4),
    }
    # Timing: inference through the Detector (resize included) and one training step, batch 1.
    timed = images[:args.time_images]
    detector.predict(timed[0])
    start = time.perf_counter()
    for image in timed:
        detector.predict(image)
    infer = (time.perf_counter() - start) / len(timed)
    train_items = _read_split(_data_dir(), "train")
    step_fn = _train_step_fn(detector.model, cfg)
    times = []
    for i in range(args.time_train_steps + 1):
        batch = _train_batch(detector.model, *train_items[i % len(train_items)])
        start = time.perf_counter()
        step_fn(batch)
        times.append(time.perf_counter() - start)
    summary_path = os.path.join(args.work_dir, "torch_summary.json")
    torch_times = {}
    if os.path.exists(summary_path):
        with open(summary_path) as fh:
            torch_times = json.load(fh).get(arch, {})
    result["seconds"] = {
        "inference_detkit": round(infer, 3),
        "inference_torchvision": round(torch_times.get("infer_seconds_per_image", float("nan")), 3),
        "train_step_detkit": round(float(np.mean(times[1:])), 3),
        "train_step_torchvision": round(torch_times.get("train_step_seconds", float("nan")), 3),
    }
    s = result["seconds"]
    s["inference_ratio"] = round(s["inference_detkit"] / s["inference_torchvision"], 2)
    s["train_step_ratio"] = round(s["train_step_detkit"] / s["train_step_torchvision"], 2)
    result["torch_training"] = {k: torch_times.get(k) for k in ("train_steps", "train_seconds", "last_loss")}
    return result


def _train_batch(model, path: str, boxes: np.ndarray) -> dict:
    """One training example resized as the input pipeline does (no augmentation)."""
    import tensorflow as tf
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    resized, new_hw = model.transform.resize(image)
    ratio = (new_hw.numpy() / np.asarray(image.shape[:2])).astype(np.float32)
    scaled = boxes * np.asarray([ratio[1], ratio[0], ratio[1], ratio[0]], np.float32)
    return {"image": resized[None], "image_hw": new_hw[None], "boxes": tf.constant(scaled[None]),
            "labels": tf.ones([1, len(boxes)], tf.int32)}


def _train_step_fn(model, cfg):
    """detkit's training step (the trainer's), SGD with momentum, traced once per input shape."""
    import keras
    import tensorflow as tf

    from detkit.train.step import make_replica_step

    step = make_replica_step(model, keras.optimizers.SGD(1e-5, momentum=0.9))
    # One trace for every image size, as the trainer's padded batches.
    spec = {"image": tf.TensorSpec([1, None, None, 3], tf.float32), "image_hw": tf.TensorSpec([1, 2], tf.int32),
            "boxes": tf.TensorSpec([1, None, 4], tf.float32), "labels": tf.TensorSpec([1, None], tf.int32)}
    return tf.function(step, input_signature=[spec])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", required=True, help="an interpreter with torch and torchvision")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--train-steps", type=int, default=40, help="torch-side training steps per arch")
    parser.add_argument("--lr", type=float, default=0.01, help="torch-side SGD learning rate")
    parser.add_argument("--state-from", default="", help="torch side: start from this .pth instead of the seed")
    parser.add_argument("--work-dir", default="/tmp/detkit-parity")
    parser.add_argument("--reuse", action="store_true", help="reuse the torch side's files in --work-dir")
    parser.add_argument("--feature-images", type=int, default=2)
    parser.add_argument("--time-images", type=int, default=5)
    parser.add_argument("--time-train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit-images", type=int, default=0, help="only the first N test photos (0 = all)")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    todo = [a for a in args.archs if not (args.reuse and os.path.exists(os.path.join(args.work_dir, f"{a}.npz")))]
    if todo:
        run_torch_side(args, todo)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    for arch in args.archs:
        print(json.dumps(compare_arch(arch, args)), flush=True)


if __name__ == "__main__":
    main()
