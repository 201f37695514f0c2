"""The torchvision side of parity_torchvision.py; runs in the torch venv (torch, torchvision, numpy, PIL only).

Per arch: build the model with a fixed seed, train it briefly on the raccoon train split, save its state dict
(.pth and .npz), run it on the test photos saving every stage, and time inference and a training step.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image

TRAIN_SIZES = {"fasterrcnn_resnet50_fpn": (480, 800), "fasterrcnn_mobilenet_v3_large_fpn": (480, 800),
               "fasterrcnn_mobilenet_v3_large_320_fpn": (320, 640)}


def read_split(data_dir: str, split: str) -> list[tuple[str, np.ndarray]]:
    """(image path, boxes [N, 4]) per image of a raccoon CSV split, in file order."""
    boxes: dict[str, list] = {}
    with open(os.path.join(data_dir, f"{split}_labels.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            boxes.setdefault(row["filename"], []).append(
                [float(row["xmin"]), float(row["ymin"]), float(row["xmax"]), float(row["ymax"])])
    return [(os.path.join(data_dir, "images", name), np.asarray(b, np.float32)) for name, b in boxes.items()]


def load_image(path: str) -> torch.Tensor:
    """[3, H, W] float 0-1, RGB."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[torch] {msg}", file=sys.stderr, flush=True)


def train(model, items, steps: int, seed: int, lr: float) -> float:
    """A few SGD steps, batch 1, at a reduced size; returns the last loss."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    loss_value = float("nan")
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 10)
        path, boxes = items[int(rng.integers(len(items)))]
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(boxes), dtype=torch.int64)}
        losses = model([load_image(path)], [target])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if (step + 1) % 10 == 0 or step + 1 == steps:
            rate = (step + 1) / (time.time() - start)
            log(f"train step {step + 1}/{steps} loss {loss_value:.3f} ({rate:.2f} steps/s, "
                f"ETA {(steps - step - 1) / rate:.0f} s)")
    return loss_value


def capture(model, image: torch.Tensor, with_features: bool) -> dict:
    """Every stage of one inference, as numpy (feature maps NHWC, objectness in (H, W, A) order)."""
    got: dict = {}
    hooks = [
        model.transform.register_forward_hook(lambda m, i, o: got.update(
            padded_hw=np.asarray(o[0].tensors.shape[-2:]), resized_hw=np.asarray(o[0].image_sizes[0]))),
        model.rpn.head.register_forward_hook(lambda m, i, o: got.update(objectness=[
            x[0].permute(1, 2, 0).reshape(-1).numpy().copy() for x in o[0]])),
    ]
    if with_features:
        hooks.append(model.backbone.register_forward_hook(lambda m, i, o: got.update(
            features=[v[0].permute(1, 2, 0).numpy().copy() for v in o.values()])))
    original = model.rpn.filter_proposals

    def filter_proposals(*args, **kwargs):
        boxes, scores = original(*args, **kwargs)
        got.update(proposals=boxes[0].numpy().copy(), proposal_scores=scores[0].numpy().copy())
        return boxes, scores

    model.rpn.filter_proposals = filter_proposals
    try:
        with torch.no_grad():
            out = model([image])[0]
    finally:
        model.rpn.filter_proposals = original
        for h in hooks:
            h.remove()
    got.update(boxes=out["boxes"].numpy(), labels=out["labels"].numpy(), scores=out["scores"].numpy())
    return got


def time_inference(model, images: list, repeats: int) -> float:
    """Mean seconds per image (after one warm-up image)."""
    model.eval()
    with torch.no_grad():
        model([images[0]])
        start = time.perf_counter()
        n = 0
        for _ in range(repeats):
            for image in images:
                model([image])
                n += 1
    return (time.perf_counter() - start) / n


def time_train_step(model, items, steps: int) -> float:
    """Mean seconds of one SGD step (forward, backward, update), batch 1, at the arch's own size."""
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
    times = []
    for i in range(steps + 1):
        path, boxes = items[i % len(items)]
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(boxes), dtype=torch.int64)}
        image = load_image(path)
        start = time.perf_counter()
        loss = sum(model([image], [target]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--archs", nargs="+", required=True)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--feature-images", type=int, default=2)
    parser.add_argument("--time-images", type=int, default=5)
    parser.add_argument("--time-train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--limit-images", type=int, default=0, help="only the first N test photos (0 = all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    train_items = read_split(args.data_dir, "train")
    test_items = read_split(args.data_dir, "test")
    if args.limit_images:
        test_items = test_items[:args.limit_images]
    summary = {}
    for arch in args.archs:
        torch.manual_seed(args.seed)
        builder = getattr(torchvision.models.detection, arch)
        model = builder(weights=None, weights_backbone=None, num_classes=2)
        own_sizes = (model.transform.min_size, model.transform.max_size)
        model.transform.min_size, model.transform.max_size = (TRAIN_SIZES[arch][0],), TRAIN_SIZES[arch][1]
        start = time.time()
        loss = train(model, train_items, args.train_steps, args.seed, args.lr) if args.train_steps > 0 else float("nan")
        train_seconds = time.time() - start
        model.transform.min_size, model.transform.max_size = own_sizes
        model.eval()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(args.out_dir, f"{arch}.pth"))
        np.savez(os.path.join(args.out_dir, f"{arch}.npz"), **{k: v.numpy() for k, v in state.items()})
        for i, (path, _) in enumerate(test_items):
            got = capture(model, load_image(path), with_features=i < args.feature_images)
            flat = {"image": os.path.basename(path)}
            for key, value in got.items():
                if isinstance(value, list):
                    for level, v in enumerate(value):
                        flat[f"{key}_{level}"] = v
                else:
                    flat[key] = value
            np.savez(os.path.join(args.out_dir, f"{arch}-{i:03d}.npz"), **flat)
        log(f"{arch}: ran {len(test_items)} test photos")
        images = [load_image(p) for p, _ in test_items[:args.time_images]]
        infer = time_inference(model, images, 1)
        step = time_train_step(model, train_items, args.time_train_steps)
        summary[arch] = {"train_steps": args.train_steps, "train_seconds": round(train_seconds, 1),
                         "last_loss": loss, "infer_seconds_per_image": infer, "train_step_seconds": step,
                         "num_test_images": len(test_items)}
        log(f"{arch}: {summary[arch]}")
    with open(os.path.join(args.out_dir, "torch_summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
