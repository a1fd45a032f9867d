"""Multi-object tracking metrics (MOTA, IDF1, ID switches) with ``motmetrics``.

    summary = mot_metrics(truth, hypotheses)   # one (ids, boxes) pair per frame each
    summary["idf1"], summary["mota"], summary["num_switches"]

A ground-truth box and a tracked box can match when their IoU is at least ``min_iou`` (0.5, the
MOTChallenge convention). The IoU distance matrix is computed here in numpy (``motmetrics``
1.4's ``iou_matrix`` calls ``np.asfarray``, absent from numpy 2); the accumulation and the
metrics are ``motmetrics``'. Requires the ``track`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MOT_METRICS", "mot_metrics"]

MOT_METRICS = (
    "idf1",
    "mota",
    "motp",
    "num_switches",
    "num_false_positives",
    "num_misses",
    "num_objects",
    "mostly_tracked",
    "num_unique_objects",
)

FrameIds = tuple[np.ndarray, np.ndarray]  # ids (K,), boxes (K, 4) xyxy


def _iou_distance(gt: np.ndarray, hyp: np.ndarray, min_iou: float) -> np.ndarray:
    """``1 - IoU`` of every (ground truth, hypothesis) pair; NaN (no match) below ``min_iou``."""
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    hyp = np.asarray(hyp, np.float64).reshape(-1, 4)
    lt = np.maximum(gt[:, None, :2], hyp[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], hyp[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_g = (gt[:, 2:] - gt[:, :2]).prod(-1)
    area_h = (hyp[:, 2:] - hyp[:, :2]).prod(-1)
    iou = inter / np.maximum(area_g[:, None] + area_h[None, :] - inter, 1e-12)
    return np.where(iou >= min_iou, 1 - iou, np.nan)


def mot_metrics(
    truth: Sequence[FrameIds], hypotheses: Sequence[FrameIds], min_iou: float = 0.5
) -> dict[str, float]:
    """:data:`MOT_METRICS` over a sequence: ``truth[t]`` and ``hypotheses[t]`` are frame ``t``'s
    ``(ids, boxes)``, ground truth and tracker output respectively."""
    import motmetrics

    if len(truth) != len(hypotheses):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(hypotheses)} tracked frames")
    acc = motmetrics.MOTAccumulator(auto_id=True)
    for (gt_ids, gt_boxes), (hyp_ids, hyp_boxes) in zip(truth, hypotheses):
        acc.update(
            [int(i) for i in gt_ids],
            [int(i) for i in hyp_ids],
            _iou_distance(gt_boxes, hyp_boxes, min_iou),
        )
    frame = motmetrics.metrics.create().compute(acc, metrics=list(MOT_METRICS), name="seq")
    return {k: float(frame[k].iloc[0]) for k in MOT_METRICS}
