"""The report's figures, drawn with matplotlib: PR curves, confusion matrix, error types, AP by size.

matplotlib is imported inside each function (it takes a good fraction of a second) so that `import detkit`
and `detkit --help` stay light; figures are plain `matplotlib.figure.Figure`s rendered by Agg, without
pyplot and its global state.
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

from detkit.eval.diagnosis import Diagnosis
from detkit.eval.error_types import ERROR_TYPES
from detkit.utils.draw import PALETTE


def _figure(width: float, height: float) -> Any:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _color(i: int) -> tuple[float, float, float]:
    r, g, b = PALETTE[i % len(PALETTE)]
    return r / 255, g / 255, b / 255


def pr_curves_figure(diagnosis: Diagnosis) -> Any:
    """Precision against recall per class at IoU 0.5 and 0.75, AP in the legend, best-F1 points at 0.5."""
    fig = _figure(11, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, curves, iou in ((axes[0], diagnosis.curves50, 0.5), (axes[1], diagnosis.curves75, 0.75)):
        for c, name in enumerate(diagnosis.class_names, start=1):
            curve = curves.per_class[c]
            if curve.ap is None:
                continue
            recall = np.concatenate([[0.0], curve.recall])
            precision = np.concatenate([[curve.precision[0] if len(curve.precision) else 0.0], curve.precision])
            ax.plot(recall, precision, color=_color(c - 1), lw=1.8, label=f"{name} (AP {curve.ap:.3f})")
            point = diagnosis.best[c]
            if iou == 0.5 and point.threshold is not None and point.tp:
                ax.plot([point.recall], [point.precision], "o", color=_color(c - 1), mec="black", ms=7)
        ax.set(title=f"IoU {iou:g}: mAP {curves.map:.3f}", xlabel="recall", xlim=(0, 1.01), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    axes[0].set_ylabel("precision")
    fig.suptitle("Precision-recall curves (dots: the score threshold of the best F1)")
    return fig


def confusion_figure(labels: Sequence[str], matrix: np.ndarray, threshold: float) -> Any:
    """Counts of the confusion matrix, coloured by row share (rows: gt class; columns: detected class)."""
    matrix = np.asarray(matrix)
    k = len(labels)
    fig = _figure(max(4.5, 0.75 * k + 2.5), max(4.0, 0.6 * k + 2.0))
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        if n or i == j:
            ax.text(j, i, str(n), ha="center", va="center", fontsize="small",
                    color="white" if share[i, j] > 0.6 else "black")
    rows = [*labels[:-1], "background (false alarms)"]
    columns = [*labels[:-1], "background (missed)"]
    ax.set_xticks(range(k), columns, rotation=40, ha="right")
    ax.set_yticks(range(k), rows)
    ax.set(xlabel="detected as", ylabel="ground truth", title=f"Confusion at score >= {threshold:.2f}, IoU 0.5")
    return fig


def error_types_figure(diagnosis: Diagnosis) -> Any:
    """Per TIDE error type: the mAP gained when its errors alone are fixed, and its share of 1 - mAP."""
    costs = diagnosis.costs
    fig = _figure(7.5, 4.0)
    ax = fig.subplots()
    values = [costs.mean_cost[t] for t in ERROR_TYPES]
    shares = [costs.mean_share[t] for t in ERROR_TYPES]
    counts = [sum(costs.count[t].values()) for t in ERROR_TYPES]
    y = np.arange(len(ERROR_TYPES))
    colors = [_color(i) for i in range(len(ERROR_TYPES))]
    ax.barh(y - 0.2, values, height=0.4, color=colors, edgecolor="black", label="fixed alone (TIDE's dAP)")
    ax.barh(y + 0.2, shares, height=0.4, color=colors, edgecolor="black", hatch="//", alpha=0.55,
            label="share of 1 - mAP")
    for yi, value, share, count in zip(y, values, shares, counts):
        ax.text(max(value, share), yi, f" {value:.3f} alone, {share:.3f} share ({count})", va="center",
                fontsize="small")
    ax.set_yticks(y, list(ERROR_TYPES))
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + shares + [0.01]) * 1.7)
    ax.legend(loc="lower right", fontsize="small")
    ax.set(xlabel="mAP@0.5 gained when fixed (number of errors)",
           title=f"Error types (TIDE): mAP@0.5 {costs.mean_ap:.3f}, missing {1 - costs.mean_ap:.3f}")
    return fig


def size_figure(diagnosis: Diagnosis) -> Any:
    """AP@0.5 per size bin (mean over classes, and per class), with the number of gt boxes in each bin."""
    bins = diagnosis.bins
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    x = np.arange(len(bins))
    means = [b.mean_ap if b.mean_ap is not None else 0.0 for b in bins]
    ax.bar(x, means, color="#bbbbbb", edgecolor="black", label="mean")
    for c, name in enumerate(diagnosis.class_names, start=1):
        ys = [b.ap.get(c, np.nan) for b in bins]
        if not all(np.isnan(ys)) and len(diagnosis.class_names) > 1:
            ax.plot(x, ys, "o-", color=_color(c - 1), label=name)
    for xi, b, m in zip(x, bins, means):
        ax.text(xi, m, f"{m:.2f}\n{sum(b.num_gt.values())} boxes", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, [f"{b.name}\n{_range(b.low, b.high)}" for b in bins])
    ax.set(ylim=(0, 1.15), ylabel="AP@0.5", title="AP by object size (sqrt of box area, bins from the data)")
    ax.legend(loc="upper left", fontsize="small", ncols=3)
    return fig


def _range(low: float, high: float) -> str:
    return f">= {low:g} px" if np.isinf(high) else f"{low:g}-{high:g} px"


def save(fig: Any, path: str) -> None:
    """Write the figure as a PNG."""
    fig.savefig(path, format="png")


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
