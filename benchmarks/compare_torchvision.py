"""detkit vs torchvision's Faster R-CNN, same architecture, same machine, same run; one JSON line per case.

    python benchmarks/compare_torchvision.py [--cases resnet50_c4:600x800,mobilenet_v2:320x320] [--rounds 2]
        [--torch-python PYTHON] [--pipeline]

torch and torchvision are needed only here (never by detkit); `--torch-python` names an interpreter that
has them (default: this one). Each side runs in its own process with 2 threads, so neither library's
thread pools or allocator disturb the other, and each child reports its own peak RSS.

Both sides are built alike:
- resnet50_c4: ResNet-50 to conv4 (stride 16, 1024 channels, frozen BatchNorm), RPN with a 512-channel
  3x3 conv and 9 anchors (64/128/256 x 0.5/1/2), RoIs cropped to 14x14, conv5 + average pool as the head.
  (Keras' ResNet-50 strides in the 1x1 conv, torchvision's in the 3x3 conv: torchvision does slightly more
  FLOPs in the three strided blocks.)
- mobilenet_v2: MobileNetV2 to block 13's expansion (stride 16, 576 channels), the same RPN, RoIs cropped
  to 14x14 and max-pooled to 7x7, two 1024 fully-connected layers.
Untrained weights would let NMS drop most proposals, so RPN NMS is 1.0 on both sides: exactly 300 RoIs
(test) and 2000 (train, of which 256 are sampled for the head) are processed, with score threshold 0 and
300 detections per image kept. 20 classes. A training step is forward + backward + SGD (momentum 0.9) on
one image with three ground-truth boxes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

NUM_CLASSES = 20
GT_BOXES = [[40.0, 60.0, 200.0, 220.0], [150.0, 30.0, 300.0, 160.0], [10.0, 10.0, 120.0, 300.0]]
GT_LABELS = [3, 7, 12]


def _median(fn, warmup: int, repeats: int) -> float:
    """Median wall time of fn() after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _scaled_gt(height: int, width: int) -> list[list[float]]:
    """The fixed ground-truth boxes, scaled from a 320x320 layout to the input size."""
    return [[x1 * width / 320, y1 * height / 320, x2 * width / 320, y2 * height / 320]
            for x1, y1, x2, y2 in GT_BOXES]


# ---------------------------------------------------------------- detkit side
def _detkit_child(backbone: str, height: int, width: int, threads: int, warmup: int, repeats: int) -> dict:
    """Inference and training-step seconds of detkit's Faster R-CNN in this process."""
    from detkit.utils.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from detkit.config import load_config
    from detkit.models.build import build_detector
    from detkit.train.step import make_replica_step

    name = "resnet50" if backbone == "resnet50_c4" else backbone
    overrides = [
        f"model.base_network.name={name}", "model.base_network.weights=none",
        "model.base_network.freeze_batchnorm=true", "model.anchors.sizes=[64,128,256]",
        "model.anchors.ratios=[0.5,1.0,2.0]", "model.rpn.channels=512", "model.rpn.nms_iou=1.0",
        "model.rpn.test_proposals.pre_nms_top_n=6000", "model.rpn.test_proposals.post_nms_top_n=300",
        "model.rpn.train_proposals.pre_nms_top_n=12000", "model.rpn.train_proposals.post_nms_top_n=2000",
        "model.rpn.target.minibatch_size=256", "model.rpn.target.foreground_fraction=0.5",
        "model.rcnn.target.minibatch_size=256", "model.rcnn.target.foreground_fraction=0.25",
        "model.roi_pooling.crop_size=14", "model.roi_pooling.pool_stride=2",
        "model.postprocess.score_threshold=0.0", "model.postprocess.max_per_class=300",
        "model.postprocess.max_total=300",
        f"dataset.image.min_size={min(height, width)}", f"dataset.image.max_size={max(height, width)}",
    ]
    if backbone == "resnet50_c4":
        overrides.append("model.rcnn.head=conv5")
    else:
        overrides += ["model.rcnn.head=fc", "model.rcnn.reduce_channels=0", "model.rcnn.fc_sizes=[1024,1024]"]
    cfg = load_config(overrides=overrides)
    keras.utils.set_random_seed(0)
    model = build_detector(cfg, num_classes=NUM_CLASSES)
    images = tf.random.uniform([1, height, width, 3], 0, 255, seed=1)
    hw = tf.constant([[height, width]], tf.int32)
    boxes = tf.constant([_scaled_gt(height, width)], tf.float32)
    labels = tf.constant([GT_LABELS], tf.int64)

    @tf.function
    def infer():
        return model({"image": images, "image_hw": hw}, training=False)["boxes"]

    optimizer = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
    optimizer.build(model.trainable_variables)
    replica_step = make_replica_step(model, optimizer)  # the step `detkit train` runs
    batch = {"image": images, "image_hw": hw, "boxes": boxes, "labels": labels}

    @tf.function
    def train_step():
        return replica_step(batch)["total"]

    detections = int(model({"image": images, "image_hw": hw}, training=False)["num_detections"][0])
    return {
        "infer_s": _median(lambda: infer().numpy(), warmup, repeats),
        "train_step_s": _median(lambda: train_step().numpy(), warmup, repeats),
        "detections": detections, "peak_rss_mb": _peak_rss_mb(),
    }


# ---------------------------------------------------------------- torchvision side
def _torchvision_child(backbone: str, height: int, width: int, threads: int, warmup: int, repeats: int) -> dict:
    """Inference and training-step seconds of torchvision's Faster R-CNN in this process."""
    import torch
    from torch import nn
    import torchvision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    torch.manual_seed(0)

    class RPNHead(nn.Module):
        """torchvision's RPN head with a 512-channel 3x3 conv (its own keeps the input's width)."""

        def __init__(self, in_channels: int, mid: int, anchors: int):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, mid, 3, padding=1)
            self.cls_logits = nn.Conv2d(mid, anchors, 1)
            self.bbox_pred = nn.Conv2d(mid, 4 * anchors, 1)

        def forward(self, features):
            logits, deltas = [], []
            for f in features:
                t = torch.relu(self.conv(f))
                logits.append(self.cls_logits(t))
                deltas.append(self.bbox_pred(t))
            return logits, deltas

    if backbone == "resnet50_c4":
        net = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
        body.out_channels = 1024
        box_head = nn.Sequential(net.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        representation = 2048
    else:
        net = torchvision.models.mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d)
        body = nn.Sequential(*net.features[:14], net.features[14].conv[0])
        body.out_channels = 576
        box_head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(576 * 49, 1024), nn.ReLU(),
                                 nn.Linear(1024, 1024), nn.ReLU())
        representation = 1024
    model = FasterRCNN(
        body, num_classes=None,
        rpn_anchor_generator=AnchorGenerator(sizes=((64, 128, 256),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_head=RPNHead(body.out_channels, 512, 9),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2),
        box_head=box_head, box_predictor=FastRCNNPredictor(representation, NUM_CLASSES + 1),
        min_size=min(height, width), max_size=max(height, width),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300, rpn_nms_thresh=1.0,
        rpn_batch_size_per_image=256, rpn_positive_fraction=0.5,
        box_batch_size_per_image=256, box_positive_fraction=0.25,
        box_score_thresh=0.0, box_nms_thresh=0.5, box_detections_per_img=300,
    )
    # Initialised as detkit's (and the paper's) heads, so untrained scores and boxes behave alike on both sides.
    predictor = model.roi_heads.box_predictor
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    image = torch.rand(3, height, width)
    target = {"boxes": torch.tensor(_scaled_gt(height, width)), "labels": torch.tensor(GT_LABELS)}

    def infer():
        model.eval()
        with torch.no_grad():
            return model([image])

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def train_step():
        model.train()
        losses = model([image], [target])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return float(total.detach())

    detections = len(infer()[0]["boxes"])
    return {
        "infer_s": _median(infer, warmup, repeats),
        "train_step_s": _median(train_step, warmup, repeats),
        "detections": detections, "peak_rss_mb": _peak_rss_mb(),
    }


# ---------------------------------------------------------------- input pipeline
def _pipeline_child(raccoon: str, height: int, width: int, threads: int, batches: int) -> dict:
    """Images/s of detkit's training input pipeline alone (decode, augment, resize, pad) on raccoon photos."""
    import tempfile

    from detkit.utils.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from detkit.config import load_config
    from detkit.datasets import pipeline
    from detkit.datasets.readers.common import Source
    from detkit.datasets.transform import TransformOptions, transform

    data = tempfile.mkdtemp(prefix="detkit-pipe-")
    transform(TransformOptions(fmt="csv", output_dir=data, splits=["train"], overwrite=True, show_progress=False,
                               source=Source(annotations=os.path.join(raccoon, "data", "train_labels.csv"),
                                             images_dir=os.path.join(raccoon, "images"))))
    cfg = load_config(overrides=[f"dataset.dir={data}", f"dataset.image.min_size={min(height, width)}",
                                 f"dataset.image.max_size={max(height, width)}"])
    ds = iter(pipeline.training_dataset(cfg.dataset, batch_size=1, seed=0))
    for _ in range(10):
        next(ds)
    start = time.perf_counter()
    for _ in range(batches):
        next(ds)
    return {"pipeline_images_per_s": batches / (time.perf_counter() - start), "peak_rss_mb": _peak_rss_mb()}


# ---------------------------------------------------------------- driver
def _run_child(python: str, args: list[str]) -> dict:
    """Run this script as a child and return its JSON result (stderr passes through on failure)."""
    proc = subprocess.run([python, os.path.abspath(__file__), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"compare_torchvision: child {' '.join(args)} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="resnet50_c4:600x800,resnet50_c4:320x320,"
                                           "mobilenet_v2:600x800,mobilenet_v2:320x320")
    parser.add_argument("--rounds", type=int, default=2, help="alternate detkit/torchvision this many times; "
                                                              "the best median of each side is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--pipeline", action="store_true", help="also time detkit's input pipeline alone")
    parser.add_argument("--raccoon", default=os.path.join(here, "..", "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--child", choices=["detkit", "torchvision", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        backbone, size = args.case.split(":")
        height, width = (int(v) for v in size.split("x"))
        if args.child == "pipeline":
            result = _pipeline_child(args.raccoon, height, width, args.threads, batches=100)
        else:
            child = _detkit_child if args.child == "detkit" else _torchvision_child
            result = child(backbone, height, width, args.threads, args.warmup, args.repeats)
        print(json.dumps(result))
        return

    common = ["--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    train_rates = []
    for case in args.cases.split(","):
        runs: dict[str, list[dict]] = {"detkit": [], "torchvision": []}
        for _ in range(args.rounds):
            runs["detkit"].append(_run_child(sys.executable, ["--child", "detkit", "--case", case, *common]))
            runs["torchvision"].append(_run_child(args.torch_python, ["--child", "torchvision", "--case", case,
                                                                      *common]))
        best = {side: {key: min(r[key] for r in results) for key in ("infer_s", "train_step_s")}
                for side, results in runs.items()}
        d, t = best["detkit"], best["torchvision"]
        train_rates.append((case, 1.0 / d["train_step_s"]))
        print(json.dumps({
            "case": case, "threads": args.threads,
            "detkit_infer_s": round(d["infer_s"], 4), "torchvision_infer_s": round(t["infer_s"], 4),
            "infer_ratio": round(d["infer_s"] / t["infer_s"], 3),
            "detkit_train_step_s": round(d["train_step_s"], 4),
            "torchvision_train_step_s": round(t["train_step_s"], 4),
            "train_step_ratio": round(d["train_step_s"] / t["train_step_s"], 3),
            "detkit_detections": runs["detkit"][0]["detections"],
            "torchvision_detections": runs["torchvision"][0]["detections"],
            "detkit_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["detkit"]),
            "torchvision_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["torchvision"]),
        }), flush=True)
    if args.pipeline:
        for case, rate in train_rates:
            pipe = _run_child(sys.executable, ["--child", "pipeline", "--case", case, *common,
                                               "--raccoon", args.raccoon])
            print(json.dumps({
                "case": case, "pipeline_images_per_s": round(pipe["pipeline_images_per_s"], 2),
                "train_step_images_per_s": round(rate, 3),
                "pipeline_headroom": round(pipe["pipeline_images_per_s"] / rate, 1),
                "pipeline_peak_rss_mb": pipe["peak_rss_mb"],
            }), flush=True)


if __name__ == "__main__":
    main()
