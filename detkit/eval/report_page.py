"""`detkit eval --report DIR`: report.html (self-contained, its images beside it) and report.json.

The directory is written under a temporary name and swapped in whole, so a kill leaves the old report or
the new one; an existing directory is replaced only when it is empty or holds a report of ours.
"""
from __future__ import annotations

import html
import json
import os
from typing import Any, Optional, Sequence

from detkit.errors import DetkitError
from detkit.eval import figures
from detkit.eval.diagnosis import REPORT_VERSION, Diagnosis, diagnose
from detkit.eval.error_types import ERROR_TYPES
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.report import clean
from detkit.eval.worst_images import KIND_COLORS, draw_image, read_images
from detkit.utils import atomic

FIGURES = {"pr_curves": "pr_curves.png", "confusion": "confusion.png", "error_types": "error_types.png",
           "sizes": "sizes.png"}
MARKER = "detkit_report"


def check_replaceable(out_dir: str) -> None:
    """DetkitError unless `out_dir` is absent, empty, or a report this command wrote."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise DetkitError(f"--report {out_dir}: a file is in the way; give a directory")
    if not os.listdir(out_dir):
        return
    try:
        with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as fh:
            ours = MARKER in json.load(fh)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise DetkitError(f"--report {out_dir}: the directory holds files that are not a detkit report; "
                          "give a new or empty directory")


def write_report(out_dir: str, ground_truths: Sequence[GroundTruth], detections: Sequence[Detections],
                 class_names: Sequence[str], result: dict, dataset_dir: str, split: str,
                 num_parallel_calls: int = 2, min_prob: Optional[float] = None, num_worst: int = 12) -> dict:
    """Write the report of one evaluation (`result`: its metrics, as `detkit eval --json` prints); returns
    report.json's content."""
    check_replaceable(out_dir)
    diagnosis = diagnose(ground_truths, detections, class_names, min_prob, num_worst)
    names = {w.index: w.image_id.split(":", 1)[-1] for w in diagnosis.worst}
    photos = read_images(dataset_dir, split, names, num_parallel_calls, names)
    data = report_json(result, diagnosis)
    with atomic.atomic_path(out_dir) as tmp:
        os.makedirs(os.path.join(tmp, "worst"))
        figures.save(figures.pr_curves_figure(diagnosis), os.path.join(tmp, FIGURES["pr_curves"]))
        figures.save(figures.confusion_figure(data["confusion"]["labels"], diagnosis.counts["confusion"]["matrix"],
                                              data["threshold"]), os.path.join(tmp, FIGURES["confusion"]))
        figures.save(figures.error_types_figure(diagnosis), os.path.join(tmp, FIGURES["error_types"]))
        figures.save(figures.size_figure(diagnosis), os.path.join(tmp, FIGURES["sizes"]))
        for entry, worst in zip(data["worst_images"], diagnosis.worst):
            draw_image(photos[worst.index], worst).save(os.path.join(tmp, entry["file"]), quality=90)
        with open(os.path.join(tmp, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
        with open(os.path.join(tmp, "report.html"), "w", encoding="utf-8") as fh:
            fh.write(render_html(data))
    return data


def report_json(result: dict, diagnosis: Diagnosis) -> dict:
    """The evaluation's metrics with the diagnosis's numbers added (per class: merged)."""
    analysis = diagnosis.to_json()
    data = dict(result)
    per_class = {name: dict(result.get("per_class", {}).get(name, {}), **values)
                 for name, values in analysis.pop("per_class").items()}
    data.update(analysis, per_class=per_class, figures=dict(FIGURES))
    data[MARKER] = REPORT_VERSION
    for entry in data["worst_images"]:
        entry["file"] = f"worst/{entry['rank']:02d}.jpg"
    return clean(data)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _px(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:g}"


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_num(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(key: str, alt: str) -> str:
    return f'<img class="figure" src="{FIGURES[key]}" alt="{html.escape(alt)}">'


def render_html(data: dict) -> str:
    """The page: headline numbers, then one section per figure with its table, then the worst photos."""
    esc = html.escape
    names = list(data["per_class"])
    t = data["threshold"]
    classes = _table("per-class", ["class", "gt boxes", "AP@0.5", "AP@0.75", "best-F1 threshold", "best F1",
                                   "TP", "FP", "FN"],
                     [[n, v["num_gt"], v["ap50"], v["ap75"], v["best_f1"]["threshold"], v["best_f1"]["f1"],
                       v["tp"], v["fp"], v["fn"]] for n, v in data["per_class"].items()])
    labels = data["confusion"]["labels"]
    confusion = _table("confusion", ["ground truth \\ detected", *labels[:-1], "missed"],
                       [[("background" if i == len(labels) - 1 else labels[i]), *row]
                        for i, row in enumerate(data["confusion"]["matrix"])])
    errors = data["errors"]
    error_rows = [["all classes (mean)", *[errors["overall"][e]["ap_cost"] for e in ERROR_TYPES]]]
    error_rows += [[n, *[errors["per_class"][n][e]["ap_cost"] for e in ERROR_TYPES]] for n in names]
    error_table = _table("error-types", ["class", *ERROR_TYPES], error_rows)
    share_rows = [["all classes (mean)", *[errors["overall"][e]["ap_share"] for e in ERROR_TYPES]]]
    share_rows += [[n, *[errors["per_class"][n][e]["ap_share"] for e in ERROR_TYPES]] for n in names]
    share_table = _table("error-shares", ["class", *ERROR_TYPES], share_rows)
    count_rows = [["all classes", *[errors["overall"][e]["count"] for e in ERROR_TYPES]]]
    count_rows += [[n, *[errors["per_class"][n][e]["count"] for e in ERROR_TYPES]] for n in names]
    count_table = _table("error-counts", ["class", *ERROR_TYPES], count_rows)
    size_table = _table("sizes", ["bin", "from px", "to px", "gt boxes", "AP@0.5", *names],
                        [[b["name"], _px(b["min_px"]), _px(b["max_px"]), b["num_gt"], b["ap50"],
                          *[b["per_class"][n]["ap50"] for n in names]] for b in data["sizes"]["bins"]])
    legend = "".join(f'<span class="swatch" style="background:rgb{color}"></span>{esc(kind)} '
                     for kind, color in KIND_COLORS.items())
    thumbs = "".join(
        f'<a class="thumb" href="#photo-{w["rank"]}"><img src="{w["file"]}" alt="{esc(w["image_id"])}">'
        f'<span>#{w["rank"]} {esc(w["image_id"])}: {w["num_errors"]} errors</span></a>'
        for w in data["worst_images"])
    lists = "".join(_photo_errors(w) for w in data["worst_images"]) or "<p>No photo has an error.</p>"
    headline = (f"{data.get('num_images', '?')} images, {data.get('num_detections', '?')} detections; "
                f"mAP@0.5 <b>{_num(data['map50'])}</b>, mAP@0.75 {_num(data['map75'])}, "
                f"COCO AP {_num(data.get('coco_ap'))}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>detkit evaluation report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #f0f0f0; }}
img.figure {{ max-width: 100%; display: block; margin: 0.5em 0; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.thumb {{ width: 280px; text-decoration: none; color: #222; font-size: 0.85em; }}
.thumb img {{ width: 280px; display: block; border: 1px solid #888; }}
.swatch {{ display: inline-block; width: 1em; height: 1em; border: 1px solid #000; margin: 0 0.3em 0 1em;
  vertical-align: middle; }}
.note {{ color: #555; font-size: 0.9em; max-width: 60em; }}
</style></head><body>
<h1>Evaluation report</h1>
<p>checkpoint <code>{esc(str(data.get('checkpoint', '-')))}</code> (step {esc(str(data.get('step', '-')))}),
dataset <code>{esc(str(data.get('dataset_dir', '-')))}</code> split <code>{esc(str(data.get('split', '-')))}</code></p>
<p>{headline}</p>
<p>Counts at score threshold <b id="threshold">{t:.4f}</b> ({esc(data['threshold_rule'])}), IoU 0.5.
How to read each figure: docs/report.md in detkit.</p>
<h2 id="pr">Precision-recall curves</h2>
{_figure("pr_curves", "precision-recall curves")}
<h2 id="classes">Per class</h2>
{classes}
<h2 id="confusion-matrix">Confusion matrix</h2>
{_figure("confusion", "confusion matrix")}
{confusion}
<p class="note">Rows: the ground-truth class; the background row counts detections that found no object.
Columns: the detected class; the missed column counts objects no detection found.
{data.get('ignored_detections', 0)} detections on difficult or crowd boxes are left out.</p>
<h2 id="errors">Error types (TIDE)</h2>
{_figure("error_types", "AP cost of each error type")}
<p class="note">The AP each type costs: its share of the missing AP (1 - AP), the gain of fixing it averaged over
every order of fixing the types one after another; a row adds up to 1 - AP.</p>
{share_table}
<p class="note">TIDE's dAP: AP@0.5 gained when the errors of one type alone are fixed (these overlap, so they can
add up to a little more than 1 - AP):</p>
{error_table}
<p class="note">Number of errors of each type (all detections, any score):</p>
{count_table}
<h2 id="size">AP by object size</h2>
{_figure("sizes", "AP by object size")}
{size_table}
<h2 id="worst">The worst photos</h2>
<p>{legend}</p>
<div class="thumbs">{thumbs}</div>
{lists}
</body></html>
"""


def _photo_errors(entry: dict) -> str:
    rows = []
    for e in entry["errors"]:
        if e["kind"] == "missed":
            what = f"missed {e['class']}" + (f" (detected as {e['detected_as']})" if "detected_as" in e else "")
            rows.append([what, "", "", "", ", ".join(_num(v, 0) for v in e["box"])])
        else:
            rows.append([f"false positive {e['class']}", e["score"], e["type"], e["iou"],
                         ", ".join(_num(v, 0) for v in e["box"])])
    table = _table(f"errors-{entry['rank']}", ["error", "score", "type", "best IoU", "box (px)"], rows)
    return (f'<h3 id="photo-{entry["rank"]}">#{entry["rank"]} {html.escape(entry["image_id"])}: '
            f'{entry["num_errors"]} errors, {entry["true_positives"]} found</h3>'
            f'<img class="figure" src="{entry["file"]}" alt="{html.escape(entry["image_id"])}">{table}')
