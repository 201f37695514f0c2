"""Detection metrics: Pascal VOC mAP and COCO AP/AR over plain numpy ground truth and detections."""
from detkit.eval.coco_metrics import coco_metrics
from detkit.eval.metrics import central_box_baseline, evaluate, map_key
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.voc_map import VocResult, voc_average_precision

__all__ = [
    "Detections",
    "GroundTruth",
    "VocResult",
    "central_box_baseline",
    "coco_metrics",
    "evaluate",
    "map_key",
    "voc_average_precision",
]
