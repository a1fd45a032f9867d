"""COCO evaluation across ranks, its typed result, and its plots; beside it, what the mAP hides:
``analysis`` (confusion matrix, P/R/F1 against confidence), ``darknet_map`` (darknet's
``detector map`` report), ``tide`` (the TIDE error breakdown) and ``worst`` (the worst images)."""

from yolov4.evaluation.coco import CocoEvaluator, detections_to_coco, evaluate_coco
from yolov4.evaluation.result import METRIC_KEYS, EvaluationResult

__all__ = [
    "METRIC_KEYS",
    "CocoEvaluator",
    "EvaluationResult",
    "detections_to_coco",
    "evaluate_coco",
]
