"""Plots of evaluation results (matplotlib, headless) and box drawings for TensorBoard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "plot_pr_curves",
    "pr_curve_figure",
    "draw_detections",
    "confusion_matrix_figure",
    "plot_confusion_matrix",
    "pr_f1_figure",
    "plot_pr_f1",
    "errors_figure",
    "plot_errors",
]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs


def pr_curve_figure(precision: np.ndarray, names: Sequence[str], iou_index: int = 0):
    """Precision-recall curves at IoU 0.5 (``iou_index`` 0 of COCOeval's ``(T, R, K, A, M)``
    ``precision``), one line per class and their mean; a matplotlib figure.

    A bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot state, and the process's
    matplotlib backend is left as the user set it."""
    from matplotlib.figure import Figure

    p = precision[iou_index, :, :, 0, -1]  # (R, K), -1 where a class has no ground truth
    fig = Figure(figsize=(7, 5), dpi=110)
    ax = fig.subplots()
    valid = []
    for k, name in enumerate(names[: p.shape[1]]):
        curve = p[:, k]
        if (curve > -1).any():
            valid.append(np.clip(curve, 0, None))
            ax.plot(
                RECALL_POINTS,
                valid[-1],
                lw=1,
                alpha=0.7,
                label=f"{name} {curve[curve > -1].mean():.3f}",
            )
    if valid:
        mean = np.mean(valid, axis=0)
        ax.plot(
            RECALL_POINTS, mean, lw=3, color="k", label=f"all classes {mean.mean():.3f} mAP@0.5"
        )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall, IoU 0.5",
    )
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def plot_pr_curves(
    precision: np.ndarray, names: Sequence[str], path: str | Path, iou_index: int = 0
) -> Path:
    """:func:`pr_curve_figure` written as a PNG."""
    fig = pr_curve_figure(precision, names, iou_index)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def confusion_matrix_figure(analysis):
    """The :class:`~yolov4.evaluation.analysis.DetectionAnalysis` confusion matrix: counts
    (left) and row-normalised (right), rows ground truth, columns prediction, each over the
    classes and background. A bare Agg :class:`~matplotlib.figure.Figure` (no pyplot state)."""
    from matplotlib.figure import Figure

    labels, n = analysis.labels, len(analysis.labels)
    side = min(4 + 0.35 * n, 30)
    fig = Figure(figsize=(2 * side + 1, side), dpi=100)
    for ax, values, title, fmt in zip(
        fig.subplots(1, 2),
        (analysis.matrix, analysis.normalized),
        ("counts", "row-normalised"),
        ("{:d}", "{:.2f}"),
    ):
        im = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        ax.set(
            xlabel="prediction",
            ylabel="ground truth",
            title=f"{title}, conf {analysis.conf:g}, IoU {analysis.iou:g}",
        )
        if n <= 30:  # numbers stay legible
            top = values.max() if values.size else 0
            for (i, j), v in np.ndenumerate(values):
                if v:
                    ax.text(
                        j,
                        i,
                        fmt.format(v.item()),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > top / 2 else "black",
                    )
    fig.tight_layout()
    return fig


def plot_confusion_matrix(analysis, path: str | Path) -> Path:
    """:func:`confusion_matrix_figure` written as a PNG."""
    return _save(confusion_matrix_figure(analysis), path)


def pr_f1_figure(analysis):
    """Precision, recall and F1 against confidence (one thin line per class, all classes
    pooled thick, the best-F1 confidence marked); a bare Agg figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.5), dpi=100)
    conf = analysis.confidence
    overall = analysis.overall_curves
    for ax, key in zip(fig.subplots(1, 3), ("precision", "recall", "f1")):
        for name, c in analysis.per_class_curves.items():
            if c["num_gt"]:
                ax.plot(conf, c[key], lw=1, alpha=0.6, label=name)
        best = overall["best"]
        label = "all classes" + (
            f" (best F1 {best['f1']:.3f} at conf {best['conf']:.3f})" if best["conf"] else ""
        )
        ax.plot(conf, overall[key], lw=3, color="k", label=label)
        if best["conf"] is not None:
            ax.axvline(best["conf"], color="r", ls="--", lw=1)
        ax.set(xlabel="confidence", ylabel=key.replace("f1", "F1"), xlim=(0, 1), ylim=(0, 1.01))
        ax.set_title(f"{key if key != 'f1' else 'F1'}, IoU {analysis.iou:g}")
    ax.legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    return fig


def plot_pr_f1(analysis, path: str | Path) -> Path:
    """:func:`pr_f1_figure` written as a PNG."""
    return _save(pr_f1_figure(analysis), path)


def errors_figure(breakdown):
    """The :class:`~yolov4.evaluation.tide.ErrorBreakdown` as bars: the AP50 gained by fixing
    each error type, with its count; a bare Agg figure."""
    from matplotlib.figure import Figure

    types = list(breakdown.dap50)
    values = [100 * breakdown.dap50[t] for t in types]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    bars = ax.bar(types, values, color="tab:red")
    for bar, t in zip(bars, types):
        ax.annotate(
            f"{bar.get_height():.1f}\n({breakdown.counts[t]})",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set(
        ylabel="AP50 gained by fixing (points)",
        ylim=(0, max(values + [1.0]) * 1.25),
        title=f"errors (TIDE, tb {breakdown.tb:g}, tf {breakdown.tf:g}): "
        + (f"AP50 {100 * breakdown.ap50:.1f}" if breakdown.ap50 >= 0 else "AP50 undefined"),
    )
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def plot_errors(breakdown, path: str | Path) -> Path:
    """:func:`errors_figure` written as a PNG."""
    return _save(errors_figure(breakdown), path)


def draw_detections(
    images: torch.Tensor,
    targets: torch.Tensor,
    detections: Sequence[torch.Tensor],
    names: Sequence[str],
    score_thresh: float = 0.25,
) -> torch.Tensor:
    """A grid image: true boxes green, predictions (score >= ``score_thresh``) red with class
    and score. ``images (B, 3, H, W)`` float [0, 1]; ``targets (M, 6)`` ``[image_index, class,
    x1, y1, x2, y2]`` and ``detections[i] (K_i, 6)`` ``[x1, y1, x2, y2, score, class]``, all in
    input pixels. Returns ``(3, H', W')`` uint8."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    drawn = []
    for i, image in enumerate(images.detach().cpu()):
        img = (image.clamp(0, 1) * 255).to(torch.uint8)
        truth = targets[targets[:, 0] == i].detach().cpu()
        if len(truth):
            img = draw_bounding_boxes(img, truth[:, 2:6], colors="lime", width=1)
        det = detections[i].detach().cpu()
        det = det[det[:, 4] >= score_thresh]
        det = det[det[:, 4].argsort()]  # lowest first: the best box and label drawn on top
        if len(det):
            labels = [f"{names[int(c)]} {s:.2f}" for s, c in det[:, 4:6].tolist()]
            img = draw_bounding_boxes(img, det[:, :4], labels=labels, colors="red", width=1)
        drawn.append(img)
    return make_grid(drawn, nrow=min(4, len(drawn)), padding=2)
