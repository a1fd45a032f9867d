"""Plots of evaluation results (matplotlib, headless) and box drawings for TensorBoard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["plot_pr_curves", "pr_curve_figure", "draw_detections"]

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
        if len(det):
            labels = [f"{names[int(c)]} {s:.2f}" for s, c in det[:, 4:6].tolist()]
            img = draw_bounding_boxes(img, det[:, :4], labels=labels, colors="red", width=1)
        drawn.append(img)
    return make_grid(drawn, nrow=min(4, len(drawn)), padding=2)
