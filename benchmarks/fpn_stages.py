"""Where the inference time of a torchvision-layout fpn detector goes: each stage timed alone under
tf.function, on its own inputs, in alternation; prints one JSON line (milliseconds, medians).

    python benchmarks/fpn_stages.py --arch fasterrcnn_mobilenet_v3_large_320_fpn --size 320x512

Random weights unless `--npz` names a state dict saved by parity_torchvision.py; the RPN's initial
objectness (sigmoid of ~0 = 0.5) passes the 0.05 score threshold, so random weights give the head the most
RoIs (`post_nms_top_n` minus what NMS removes) and a trained model fewer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _interleaved_medians(fns: dict, warmup: int, repeats: int) -> dict:
    """Median milliseconds of each fn(), timed in alternation so that other processes' load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: round(1000 * statistics.median(t), 2) for k, t in times.items()}


def main() -> None:
    """Parse arguments, build the model, time its stages."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    parser.add_argument("--size", default="320x512", help="HxW of the (already resized) input")
    parser.add_argument("--npz", help="torchvision state dict as .npz (else random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from detkit.models import postprocess
    from detkit.models.build import build_detector
    from detkit.pretrained import torchvision as tv

    cfg = tv.arch_config(args.arch)
    state = dict(np.load(args.npz)) if args.npz else None
    model = build_detector(cfg, tv.num_classes_in(state) if state else 1)
    if state:
        tv.assign_state_dict(model, state, args.arch)
    h, w = (int(v) for v in args.size.lower().split("x"))
    images = tf.random.uniform([1, h, w, 3], 0, 255, seed=0)
    image_hw = tf.constant([[h, w]], tf.float32)

    x = model.transform.batch(images, image_hw)
    body_out = list(model.backbone(x))
    levels, padded_hw = model.features(images, image_hw)
    logits, deltas, anchors = model.rpn_outputs(levels, padded_hw)
    boxes, _, valid = model.proposals(logits, deltas, anchors, image_hw, False)
    count = max(int(tf.reduce_sum(tf.cast(valid, tf.int32))), 1)
    rois, rois_valid = boxes[:, :count], valid[:, :count]
    pooler = model.roi_settings.pooler
    pooled = pooler(levels, rois)
    cls_logits, box_deltas = model.box_head(levels, rois, False)

    stages = {
        "input": (lambda: model.transform.batch(images, image_hw)),
        "body": (lambda: model.backbone(x)),
        "fpn": (lambda: model.fpn(body_out)),
        "rpn_head": (lambda: model.rpn_outputs(levels, padded_hw)),
        "proposals": (lambda: model.proposals(logits, deltas, anchors, image_hw, False)),
        "roi_align": (lambda: pooler(levels, rois)),
        "box_head": (lambda: model.rcnn_head(pooled)),
        "postprocess": (lambda: postprocess.detections_from_rcnn(rois, rois_valid, cls_logits, box_deltas,
                                                                 image_hw, model.roi_settings.box_weights,
                                                                 model.detections)),
        "whole_model": (lambda: model.stages(images, tf.constant([[h, w]], tf.int32))["boxes"]),
    }
    fns = {}
    for name, stage in stages.items():
        compiled = tf.function(stage)
        fns[name] = (lambda c=compiled: tf.nest.map_structure(lambda t: t.numpy(), c()))
    ms = _interleaved_medians(fns, args.warmup, args.repeats)
    print(f"{count} RoIs reach the box head", file=sys.stderr)
    print(json.dumps({"arch": args.arch, "size": args.size, "weights": args.npz or "random", "rois": count,
                      "threads": args.threads, "milliseconds": ms}))


if __name__ == "__main__":
    main()
