"""Inference time of the whole detector vs its backbone alone, in one run; prints one JSON line.

    python benchmarks/inference.py --backbone resnet50 --size 600x800 --proposals 300

Untrained weights would let NMS drop most proposals, so the RPN NMS threshold is set to 1.0: exactly
`--proposals` RoIs reach the R-CNN head, as with a trained model at its cap.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _median_seconds(fn, warmup: int, repeats: int) -> float:
    """Median wall time of fn() after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved_medians(fns, warmup: int, repeats: int) -> list[float]:
    """Median wall time of each fn, timed in alternation so that load from other processes hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _stage_times(tf, model, images, hw, warmup: int, repeats: int) -> dict:
    """Median seconds of the detector cut after each stage, to see where the time goes."""
    image_hw = tf.cast(hw, tf.float32)

    @tf.function
    def upto(stage: str):
        maps, padded_hw = model.features(images, image_hw)
        logits, deltas, anchors = model.rpn_outputs(maps, padded_hw)
        if stage == "rpn":
            return logits
        boxes, scores, valid = model.proposals(logits, deltas, anchors, image_hw, training=False)
        if stage == "proposals":
            return boxes
        if stage == "roi_pooling":
            return model.roi_settings.pooler([model.rcnn_head.reduce_features(m) for m in maps], boxes)
        cls_logits, box_deltas = model.box_head(maps, boxes, training=False)
        return cls_logits

    stages = ["rpn", "proposals", "roi_pooling", "rcnn_head"] if model.rcnn_head is not None else ["rpn", "proposals"]
    return {s: round(_median_seconds(lambda s=s: upto(s).numpy(), warmup, repeats), 4) for s in stages}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50",
                        choices=["vgg16", "resnet50", "resnet101", "mobilenet_v2", "small_resnet"])
    parser.add_argument("--size", default="600x800", help="HxW of the (already resized) input")
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stages", action="store_true",
                        help="also time the detector cut after each stage (cumulative seconds)")
    parser.add_argument("-o", "--override", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    from detkit.utils.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from detkit.config import load_config
    from detkit.models.build import build_detector

    overrides = [
        f"model.base_network.name={args.backbone}", "model.base_network.weights=none",
        f"model.rpn.test_proposals.post_nms_top_n={args.proposals}",
        f"model.rpn.test_proposals.pre_nms_top_n={max(args.proposals, 6000)}",
        "model.rpn.nms_iou=1.0", "model.postprocess.score_threshold=0.0",
        f"dataset.image.min_size={min(height, width)}", f"dataset.image.max_size={max(height, width)}",
    ] + args.override
    cfg = load_config(overrides=overrides)
    model = build_detector(cfg, num_classes=20)
    images = tf.random.uniform([1, height, width, 3], 0, 255)
    hw = tf.constant([[height, width]], tf.int32)

    @tf.function
    def detector():
        return model.stages(images, hw)["boxes"]  # the input is already at the network's size

    @tf.function
    def backbone():
        return model.backbone(model.transform.batch(images, hw), training=False)

    whole, base = _interleaved_medians([lambda: detector().numpy(), lambda: backbone().numpy()],
                                       args.warmup, args.repeats)
    result = {
        "backbone": args.backbone, "size": f"{height}x{width}", "proposals": args.proposals,
        "head": cfg.model.rcnn.head, "threads": args.threads, "seconds_per_image": round(whole, 4),
        "backbone_seconds_per_image": round(base, 4), "ratio": round(whole / base, 3),
    }
    if args.stages:
        result["cumulative_seconds"] = _stage_times(tf, model, images, hw, args.warmup, args.repeats)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
