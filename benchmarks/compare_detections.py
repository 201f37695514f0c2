"""Do two `detkit predict -f` outputs hold the same detections? Prints one JSON object.

    python benchmarks/compare_detections.py A.jsonl B.jsonl [--iou 0.98] [--score 0.01] [--min-prob 0.1]

A detection of A is reproduced by B when B has one on the same image with the same label, IoU >= --iou and
a score within --score (each detection of B matched once, best IoU first); and the other way round. Used to
check that a run written by an earlier detkit predicts the same after a change, and that an exported model
predicts what detkit does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def read(path: str, min_prob: float) -> dict[str, list[dict]]:
    """image (base name) -> its objects with prob >= min_prob."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            out[os.path.basename(record["file"])] = [o for o in record["objects"] if o["prob"] >= min_prob]
    return out


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reproduced(source: dict[str, list[dict]], target: dict[str, list[dict]], min_iou: float,
               max_score_diff: float) -> tuple[int, int, list[dict], dict]:
    """(detections of `source` found in `target`, all of them, the ones not found, the worst match's IoU and
    score difference)."""
    found, total, missing = 0, 0, []
    worst = {"lowest_iou": 1.0, "largest_score_diff": 0.0}
    for image, objects in source.items():
        others = list(target.get(image, []))
        used = [False] * len(others)
        for obj in sorted(objects, key=lambda o: -o["prob"]):
            total += 1
            best, best_iou = -1, min_iou
            for j, other in enumerate(others):
                if used[j] or other["label"] != obj["label"] or abs(other["prob"] - obj["prob"]) > max_score_diff:
                    continue
                value = iou(obj["bbox"], other["bbox"])
                if value >= best_iou:
                    best, best_iou = j, value
            if best >= 0:
                used[best] = True
                found += 1
                worst["lowest_iou"] = min(worst["lowest_iou"], best_iou)
                worst["largest_score_diff"] = max(worst["largest_score_diff"], abs(others[best]["prob"] - obj["prob"]))
            else:
                missing.append({"image": image, **obj})
    return found, total, missing, worst


def main() -> None:
    """Compare the two files both ways and print the shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--iou", type=float, default=0.98)
    parser.add_argument("--score", type=float, default=0.01)
    parser.add_argument("--min-prob", type=float, default=0.1)
    args = parser.parse_args()
    a, b = read(args.a, args.min_prob), read(args.b, args.min_prob)
    if set(a) != set(b):
        sys.exit(f"compare_detections: the files cover different images ({len(set(a) ^ set(b))} differ)")
    ab, a_total, a_missing, worst = reproduced(a, b, args.iou, args.score)
    ba, b_total, b_missing, _ = reproduced(b, a, args.iou, args.score)
    print(json.dumps({
        "images": len(a), "a": args.a, "b": args.b, "min_prob": args.min_prob,
        "a_in_b": ab, "a_total": a_total, "b_in_a": ba, "b_total": b_total,
        "share_a_in_b": round(ab / max(a_total, 1), 4), "share_b_in_a": round(ba / max(b_total, 1), 4),
        "matches": {k: round(v, 5) for k, v in worst.items()},
        "missing_from_b": a_missing[:10], "missing_from_a": b_missing[:10],
    }))


if __name__ == "__main__":
    main()
