"""Anchors fitted to the data: darknet's ``calc_anchors`` k-means (``1 - IoU``), masks dealt to
the heads, and the fit check run at every training start (``python -m yolov4.anchors``)."""

from yolov4.anchors.fit import (
    AnchorQuality,
    AnchorReport,
    anchor_quality,
    box_sizes,
    deal_masks,
    fit_model_anchors,
    fitted_config,
    masked_anchors,
    model_yaml,
    override_line,
)
from yolov4.anchors.kmeans import AnchorFit, avg_best_iou, best_iou, fit_anchors, kmeans, wh_iou

__all__ = [
    "AnchorFit",
    "AnchorQuality",
    "AnchorReport",
    "anchor_quality",
    "masked_anchors",
    "avg_best_iou",
    "best_iou",
    "box_sizes",
    "deal_masks",
    "fit_anchors",
    "fit_model_anchors",
    "fitted_config",
    "kmeans",
    "model_yaml",
    "override_line",
    "wh_iou",
]
