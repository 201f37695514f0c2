"""Measure `detkit dataset suspects`: plant label errors in cards, train on them, see where they rank. One JSON line.

Usage: python benchmarks/suspects_cards.py [--minutes 15] [--cards ../shared/datasets/cards] [--work DIR]
                                           [--fraction 0.05] [--seed 0] [--run RUN] [--from-scratch]

The cards training split (labelImg XML beside each photo) is converted with `fraction` of its boxes deleted
and another `fraction` given another class at random (planted.json lists them), `detkit train --dataset-dir
--minutes N` trains the recipe on it (or --run reuses a run trained on WORK/data), and `dataset suspects`
ranks the training split. Reported: the share of planted errors among the top 10% of suspects (and among the
top k, k = the number planted), how many planted errors the top 10% finds, the share a random ranking would
give, and per kind. A missing box counts as found by a missing_box suspect at IoU >= 0.5 with it; a swapped
label by a suspect on that box (IoU >= 0.9).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def plant(cards: str, out: str, fraction: float, seed: int) -> list[dict]:
    """Convert cards/train into `out` with planted errors; the list of what was planted."""
    from detkit.datasets.readers import Source
    from detkit.datasets.transform import TransformOptions, read_inputs, write_inputs

    opts = TransformOptions(fmt="voc", output_dir=out, splits=["train"], source=Source(data_dir=os.path.join(cards, "train")),
                            check=False)
    inputs = read_inputs(opts)
    data = inputs["train"]
    classes = sorted(data.classes_seen)
    boxes = [(i, j) for i, ex in enumerate(data.examples) for j in range(ex.num_boxes)]
    rng = random.Random(seed)
    chosen = rng.sample(boxes, 2 * round(fraction * len(boxes)))
    deleted, swapped = set(chosen[: len(chosen) // 2]), set(chosen[len(chosen) // 2:])
    planted = []
    for i, ex in enumerate(data.examples):
        classes_now = list(ex.classes)
        for j in range(ex.num_boxes):
            if (i, j) in swapped:
                classes_now[j] = rng.choice([c for c in classes if c != ex.classes[j]])
                planted.append({"kind": "swapped_label", "file": ex.filename, "box": list(ex.boxes[j]),
                                "was": ex.classes[j], "now": classes_now[j]})
            elif (i, j) in deleted:
                planted.append({"kind": "missing_box", "file": ex.filename, "box": list(ex.boxes[j]),
                                "was": ex.classes[j]})
        ex = dataclasses.replace(ex, classes=tuple(classes_now))
        data.examples[i] = ex.keep_boxes(j for j in range(ex.num_boxes) if (i, j) not in deleted)
    write_inputs(inputs, opts)
    return planted


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two pixel boxes."""
    from detkit.datasets.check.rules import box_iou

    return box_iou(tuple(a), tuple(b))


def matches(suspect: dict, planted: dict) -> bool:
    """Whether a suspect points at a planted error."""
    if suspect["file"] != planted["file"]:
        return False
    if planted["kind"] == "missing_box":
        return suspect["kind"] == "missing_box" and iou(suspect["box"], planted["box"]) >= 0.5
    return suspect["kind"] != "missing_box" and iou(suspect["box"], planted["box"]) >= 0.9


def main() -> None:
    """Plant, train (unless --run), rank, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", default=os.path.join(REPO, "..", "shared", "datasets", "cards"))
    parser.add_argument("--work", default=os.path.join(REPO, ".bench-suspects"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default=None, help="A run already trained on WORK/data: skip planting and training.")
    parser.add_argument("--from-scratch", action="store_true",
                        help="Passed to `detkit train` (which otherwise fine-tunes a downloaded COCO detector).")
    args = parser.parse_args()

    data_dir = os.path.join(args.work, "data")
    planted_path = os.path.join(args.work, "planted.json")
    train_seconds = None
    if args.run is None:
        os.makedirs(args.work, exist_ok=True)
        if os.path.exists(data_dir):
            raise SystemExit(f"{data_dir} exists: remove it or pass --run")
        planted = plant(args.cards, data_dir, args.fraction, args.seed)
        with open(planted_path, "w", encoding="utf-8") as fh:
            json.dump(planted, fh, indent=1)
        start = time.perf_counter()
        run_name = f"cards-noisy-{int(time.time())}"
        subprocess.run([sys.executable, "-m", "detkit", "train", "--dataset-dir", data_dir, "--minutes",
                        str(args.minutes), "-o", f"train.job_dir={os.path.join(args.work, 'jobs')}",
                        "-o", f"train.run_name={run_name}", *(["--from-scratch"] if args.from_scratch else [])],
                       check=True)
        train_seconds = time.perf_counter() - start
        run = os.path.join(args.work, "jobs", run_name)
    else:
        run = args.run
        with open(planted_path, encoding="utf-8") as fh:
            planted = json.load(fh)

    from detkit.eval.suspects import find_suspects

    start = time.perf_counter()
    found, names, _ = find_suspects(run, "train", data_dir, show_progress=False)
    suspect_seconds = time.perf_counter() - start
    ranked = [s.as_dict(names, rank) for rank, s in enumerate(found, start=1)]
    hit = [any(matches(s, p) for p in planted) for s in ranked]
    top10 = max(1, round(0.1 * len(ranked)))
    k = len(planted)

    def found_in(n: int, kind: str = "") -> int:
        """Planted errors (of a kind) pointed at by a suspect among the first n."""
        return sum(any(matches(s, p) for s in ranked[:n]) for p in planted if not kind or p["kind"] == kind)

    print(json.dumps({
        "benchmark": "suspects_cards", "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "minutes": args.minutes, "from_scratch": args.from_scratch, "train_seconds": train_seconds and round(train_seconds, 1),
        "suspects_seconds": round(suspect_seconds, 1), "run": run, "boxes_planted": k,
        "planted": {kind: sum(p["kind"] == kind for p in planted) for kind in ("missing_box", "swapped_label")},
        "suspects": len(ranked), "top10_size": top10,
        "share_planted_in_top10": round(sum(hit[:top10]) / top10, 3),
        "planted_found_in_top10": found_in(top10),
        "share_planted_in_top_k": round(sum(hit[:k]) / max(k, 1), 3),
        "planted_found_in_top_k": found_in(k),
        "found_in_top10_by_kind": {kind: found_in(top10, kind) for kind in ("missing_box", "swapped_label")},
        "random_ranking_share": round(sum(hit) / max(len(ranked), 1), 3),
        "top10_kinds": {kind: sum(s["kind"] == kind for s in ranked[:top10])
                        for kind in ("missing_box", "swapped_label", "wrong_box")},
    }))


if __name__ == "__main__":
    main()
