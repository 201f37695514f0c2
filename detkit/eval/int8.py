"""An int8 OpenVINO export with its cost measured: `detkit checkpoint export RUN --format openvino --int8`.

The run's converted model is calibrated on photos of one split of its dataset (the training split by default),
with NNCF's accuracy control keeping in float32 the layers whose int8 costs the calibration photos more than
`max_ap50_loss` AP50. Then the float32 and the int8 model, both run by OpenVINO, are evaluated on another split
(the run's eval.split) and timed there, photo by photo in alternating order, each photo's fastest of three
runs; export.json records both (AP50, COCO AP, milliseconds per photo) and the export says them on stderr, so an
int8 model never ships without what it costs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from detkit.datasets.pipeline import read_class_names
from detkit.errors import ConfigError
from detkit.eval.class_map import label_map
from detkit.eval.metrics import GroundTruth, evaluate
from detkit.eval.runner import photos_of_split, scored
from detkit.eval.voc_map import voc_average_precision
from detkit.inference.export import ExportInfo
from detkit.inference.openvino import export_openvino, quantize_int8, quantized_ops
from detkit.inference.runtimes import OpenVINORuntime

Photo = tuple[np.ndarray, GroundTruth]


@dataclass
class PrecisionScore:
    """One model's accuracy and speed on the evaluation split."""

    map50: float
    coco_ap: float
    ms_per_image: float


@dataclass
class Int8Report:
    """What `export_int8` measured, as written into export.json under "int8"."""

    dataset_dir: str
    calibration_split: str
    calibration_images: int
    eval_split: str
    eval_images: int
    max_ap50_loss: float
    quantized_ops: int
    float32: PrecisionScore
    int8: PrecisionScore

    @property
    def ap50_loss(self) -> float:
        """AP50 the int8 model lost on the evaluation split (negative: it gained)."""
        return round(self.float32.map50 - self.int8.map50, 4)

    @property
    def speedup(self) -> float:
        """Float32 time over int8 time per photo."""
        return round(self.float32.ms_per_image / max(self.int8.ms_per_image, 1e-9), 2)

    def summary(self) -> str:
        """Both models' figures on one line."""
        return (f"int8 on {self.eval_split} ({self.eval_images} photos): AP50 {self.int8.map50:.4f}, COCO AP "
                f"{self.int8.coco_ap:.4f}, {self.int8.ms_per_image:.1f} ms/photo; float32: AP50 "
                f"{self.float32.map50:.4f}, COCO AP {self.float32.coco_ap:.4f}, {self.float32.ms_per_image:.1f} "
                f"ms/photo; AP50 lost {self.ap50_loss:.4f}, {self.speedup:.2f}x faster")


def run_photos(runtime: OpenVINORuntime, photos: Sequence[Photo], mapping: Optional[np.ndarray]) -> list:
    """The detections of each photo, scored against its ground truth."""
    return [scored(gt, *runtime.one(pixels), label_map=mapping) for pixels, gt in photos]


def ap50_validation(mapping: Optional[np.ndarray], class_ids: list[int],
                    iou_threshold: float) -> Callable[[Any, Sequence[Photo]], tuple[float, list[float]]]:
    """NNCF's validation function: (AP50 over the photos, each photo's own AP50) of a compiled model."""
    def validate(compiled: Any, photos: Sequence[Photo]) -> tuple[float, list[float]]:
        photos = list(photos)
        dets = run_photos(OpenVINORuntime(compiled), photos, mapping)
        gts = [gt for _, gt in photos]
        each = [voc_average_precision([gt], [det], class_ids, iou_threshold).map for gt, det in zip(gts, dets)]
        return voc_average_precision(gts, dets, class_ids, iou_threshold).map, each

    return validate


def fastest_call(runtime: OpenVINORuntime, pixels: np.ndarray, calls: int) -> tuple[Any, float]:
    """The runtime's output on one photo and the seconds of the fastest of `calls` runs."""
    best, raw = float("inf"), None
    for _ in range(calls):
        start = time.perf_counter()
        raw = runtime.one(pixels)
        best = min(best, time.perf_counter() - start)
    return raw, best


def score_both(float32: OpenVINORuntime, int8: OpenVINORuntime, photos: Sequence[Photo],
               mapping: Optional[np.ndarray], class_names: list[str], iou_threshold: float,
               timed_calls: int = 3) -> tuple[PrecisionScore, PrecisionScore]:
    """AP50, COCO AP and milliseconds per photo of both runtimes on the evaluation photos, run photo by photo
    in alternating order so that both see the same machine; a photo's time is its fastest of `timed_calls`
    runs, as timeit takes it, since one run of a few milliseconds moves by a tenth with what else the
    machine does."""
    runtimes = (float32, int8)
    for pixels, _ in photos[:2]:  # the first calls allocate
        for runtime in runtimes:
            runtime.one(pixels)
    dets: tuple[list, list] = ([], [])
    seconds = [0.0, 0.0]
    for i, (pixels, gt) in enumerate(photos):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            raw, spent = fastest_call(runtimes[k], pixels, timed_calls)
            dets[k].append(scored(gt, *raw, label_map=mapping))
            seconds[k] += spent
    gts = [gt for _, gt in photos]
    scores = []
    for k in range(2):
        metrics = evaluate(gts, dets[k], class_names, iou_threshold=iou_threshold)
        scores.append(PrecisionScore(map50=round(metrics["map50"], 4), coco_ap=round(metrics["coco_ap"], 4),
                                     ms_per_image=round(1000 * seconds[k] / max(len(photos), 1), 2)))
    return scores[0], scores[1]


def export_int8(source: str, output_dir: str, dataset_dir: Optional[str] = None,
                calibration_split: Optional[str] = None, calibration_images: int = 300,
                eval_split: Optional[str] = None, max_ap50_loss: float = 0.01, min_prob: Optional[float] = None,
                max_detections: Optional[int] = None, overwrite: bool = False, overrides: tuple[str, ...] = (),
                log: Callable[[str], None] = lambda message: None,
                show_progress: bool = True) -> tuple[ExportInfo, Int8Report]:
    """Export a run to OpenVINO in int8 (see the module); what it wrote and what int8 cost."""
    reports: list[Int8Report] = []

    def refine(detector: Any, model: Any) -> tuple[Any, dict]:
        cfg = detector.config
        data = dataset_dir or cfg.dataset.dir
        if not data:
            raise ConfigError("--int8: the run config has no dataset.dir to calibrate on; pass --dataset-dir DIR")
        calib_split = calibration_split or cfg.dataset.split
        test_split = eval_split or cfg.eval.split
        if calib_split == test_split:
            raise ConfigError(f"--int8: calibration and evaluation both on split {calib_split!r}; the cost is "
                              "measured on photos the calibration did not see (choose another --eval-split)")
        names = read_class_names(data)
        try:
            mapping = label_map(detector.class_names, names)
        except ValueError as exc:
            raise ConfigError(f"--int8: {data}: its classes differ from the run's ({exc})") from None
        class_ids = list(range(1, len(names) + 1))
        iou = cfg.eval.iou_threshold
        calibration = photos_of_split(cfg, data, calib_split, calibration_images, show_progress)
        evaluation = photos_of_split(cfg, data, test_split, None, show_progress)
        log(f"calibrating int8 on {len(calibration)} photos of {data} split {calib_split!r} (at most "
            f"{max_ap50_loss:g} AP50 lost on them)")
        quantized = quantize_int8(model, [pixels for pixels, _ in calibration],
                                  (calibration, ap50_validation(mapping, class_ids, iou)), max_ap50_loss)
        log(f"measuring float32 and int8 on {len(evaluation)} photos of split {test_split!r}")
        fp32, int8 = score_both(OpenVINORuntime.compile(model), OpenVINORuntime.compile(quantized), evaluation,
                                mapping, names, iou)
        report = Int8Report(dataset_dir=data, calibration_split=calib_split, calibration_images=len(calibration),
                            eval_split=test_split, eval_images=len(evaluation), max_ap50_loss=max_ap50_loss,
                            quantized_ops=quantized_ops(quantized), float32=fp32, int8=int8)
        reports.append(report)
        return quantized, {"precision": "int8", "int8": dict(asdict(report), ap50_loss=report.ap50_loss,
                                                             speedup=report.speedup)}

    info = export_openvino(source, output_dir, min_prob=min_prob, max_detections=max_detections, overwrite=overwrite,
                           overrides=overrides, refine=refine)
    return info, reports[0]
