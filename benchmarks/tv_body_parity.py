"""detkit's torchvision-layout bodies vs torchvision's own, same weights, same input; prints one JSON object.

    python benchmarks/tv_body_parity.py --torch-python /tmp/tv/bin/python [--size 203x317]

torch and torchvision are needed only here (never by detkit); `--torch-python` names an interpreter that
has them. That interpreter runs this file with `--torch-side OUT.npz`: it builds torchvision's
fasterrcnn_resnet50_fpn and fasterrcnn_mobilenet_v3_large_fpn (weights=None, weights_backbone=None, seed 0),
gives every BatchNorm random affine parameters and running statistics (fresh ones are the identity, which
would hide a wrong BatchNorm), and saves each `backbone.body` state dict and its outputs for one fixed random
input. This process then builds detkit's bodies (FrozenBatchNorm and trainable BatchNormalization in
inference mode), loads the state dicts with detkit.pretrained.torch_layers and compares level by level.
The figure to read is `rel`: max |detkit - torchvision| / max |torchvision| per output (target < 1e-4).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ARCHS = ("resnet50", "mobilenet_v3_large")
PREFIX = "backbone.body."


def torch_side(out_path: str, height: int, width: int) -> None:
    """Build torchvision's detectors, randomise BatchNorm, save body weights and outputs (numpy only)."""
    import torch
    from torchvision.models import detection

    torch.set_num_threads(2)
    builders = {"resnet50": detection.fasterrcnn_resnet50_fpn,
                "mobilenet_v3_large": detection.fasterrcnn_mobilenet_v3_large_fpn}
    arrays = {}
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, height, width, generator=generator)
    arrays["input"] = image.permute(0, 2, 3, 1).numpy()
    for arch in ARCHS:
        torch.manual_seed(0)
        model = builders[arch](weights=None, weights_backbone=None).eval()
        with torch.no_grad():
            for module in model.backbone.body.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    c = module.num_features
                    module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
                    module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
            features = model.backbone.body(image)
        for key, value in model.state_dict().items():
            if key.startswith(PREFIX):
                arrays[f"{arch}/state/{key}"] = value.numpy()
        for i, (name, value) in enumerate(features.items()):
            arrays[f"{arch}/out/{i}"] = value.permute(0, 2, 3, 1).numpy()
    np.savez(out_path, **arrays)


def keras_side(npz_path: str) -> dict:
    """Load torchvision's weights into detkit's bodies and compare the outputs."""
    from detkit.models.tv_mobilenet_v3 import tv_mobilenet_v3_large
    from detkit.models.tv_resnet import tv_resnet
    from detkit.pretrained.torch_layers import load_torch_state

    data = np.load(npz_path)
    image = data["input"]
    builders = {"resnet50": lambda frozen: tv_resnet(50, frozen_bn=frozen),
                "mobilenet_v3_large": lambda frozen: tv_mobilenet_v3_large(frozen_bn=frozen)}
    report = {"input_hw": list(image.shape[1:3])}
    for arch in ARCHS:
        state = {k.split("/state/", 1)[1]: data[k] for k in data.files if k.startswith(f"{arch}/state/")}
        refs = [data[k] for k in sorted((k for k in data.files if k.startswith(f"{arch}/out/")),
                                        key=lambda k: int(k.rsplit("/", 1)[1]))]
        for frozen in (True, False):
            body = builders[arch](frozen)
            load_torch_state(body, state, PREFIX)
            outs = body(image, training=False)
            levels = []
            for ref, out in zip(refs, outs):
                out = np.asarray(out)
                if out.shape != ref.shape:
                    raise SystemExit(f"{arch}: output shape {out.shape} != torchvision's {ref.shape}")
                diff = float(np.max(np.abs(out - ref)))
                scale = float(np.max(np.abs(ref)))
                levels.append({"shape": list(ref.shape), "max_abs": diff, "max_ref": scale, "rel": diff / scale})
            report[f"{arch}/{'frozen_bn' if frozen else 'batchnorm'}"] = levels
    report["worst_rel"] = max(level["rel"] for key, value in report.items() if "/" in key for level in value)
    return report


def main() -> None:
    """Run the torch side in its own interpreter, then compare here."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--size", default="203x317", help="input HxW (odd sizes exercise the padding)")
    parser.add_argument("--torch-side", metavar="OUT_NPZ", help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    if args.torch_side:
        torch_side(args.torch_side, height, width)
        return
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "torchvision.npz")
        proc = subprocess.run([args.torch_python, os.path.abspath(__file__), "--size", args.size,
                               "--torch-side", npz], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"torch side failed:\n{proc.stderr[-2000:]}")
        report = keras_side(npz)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
