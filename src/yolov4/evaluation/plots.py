"""Plots of evaluation results (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_pr_curves"]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs


def plot_pr_curves(
    precision: np.ndarray, names: Sequence[str], path: str | Path, iou_index: int = 0
) -> Path:
    """Precision-recall curves at IoU 0.5 (``iou_index`` 0 of COCOeval's ``(T, R, K, A, M)``
    ``precision``), one line per class and their mean, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = precision[iou_index, :, :, 0, -1]  # (R, K), -1 where a class has no ground truth
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    valid = []
    for k, name in enumerate(names[: p.shape[1]]):
        curve = p[:, k]
        if (curve > -1).any():
            valid.append(np.clip(curve, 0, None))
            ax.plot(
                RECALL_POINTS,
                np.clip(curve, 0, None),
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
