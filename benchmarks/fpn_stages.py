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
    from detkit.config import load_config
    from detkit.models import postprocess, roi_align
    from detkit.models.faster_rcnn import build_detector
    from detkit.models.fpn_rcnn import pad_and_mask
    from detkit.pretrained import torchvision as tv

    cfg = load_config(overrides=tv.config_overrides(args.arch))
    state = dict(np.load(args.npz)) if args.npz else None
    model = build_detector(cfg.model, tv.num_classes_in(state) if state else 1)
    model.build_for_inference()
    if state:
        tv.assign_state_dict(model, state, args.arch)
    h, w = (int(v) for v in args.size.lower().split("x"))
    images = tf.random.uniform([1, h, w, 3], 0, 255, seed=0)
    image_hw = tf.constant([[h, w]], tf.float32)
    ra = cfg.model.fpn.roi_align

    x = pad_and_mask(model.preprocess(images), image_hw, cfg.model.fpn.size_divisible)
    body_out = list(model.backbone(x))
    levels, padded_hw = model.pyramid(images, image_hw)
    logits, deltas, anchors = model.rpn_outputs(levels, padded_hw)
    boxes, _, valid = model._proposals(logits, deltas, anchors, image_hw, False)
    count = max(int(tf.reduce_sum(tf.cast(valid, tf.int32))), 1)
    rois, rois_valid = boxes[:, :count], valid[:, :count]
    maps = levels[:len(model.strides)]
    pooled = tf.transpose(roi_align.multilevel_roi_align(maps, model.strides, rois, ra.output_size,
                                                         ra.sampling_ratio, ra.canonical_size,
                                                         ra.canonical_level), [0, 3, 1, 2])
    cls_logits, box_deltas = model._rcnn(levels, rois, False)

    stages = {
        "input": (lambda: pad_and_mask(model.preprocess(images), image_hw, cfg.model.fpn.size_divisible)),
        "body": (lambda: model.backbone(x)),
        "fpn": (lambda: model.fpn(body_out)),
        "rpn_head": (lambda: model.rpn_outputs(levels, padded_hw)),
        "proposals": (lambda: model._proposals(logits, deltas, anchors, image_hw, False)),
        "roi_align": (lambda: roi_align.multilevel_roi_align(maps, model.strides, rois, ra.output_size,
                                                             ra.sampling_ratio, ra.canonical_size,
                                                             ra.canonical_level)),
        "box_head": (lambda: model.rcnn_head(pooled)),
        "postprocess": (lambda: postprocess.detections_from_rcnn(rois, rois_valid, cls_logits, box_deltas,
                                                                 image_hw, cfg.model.rcnn.box_weights,
                                                                 cfg.model.postprocess)),
        "whole_model": (lambda: model((images, tf.constant([[h, w]], tf.int32)))),
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
