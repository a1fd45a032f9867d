"""COCO evaluation across ranks, its typed result, and its plots."""

from yolov4.evaluation.coco import CocoEvaluator, detections_to_coco, evaluate_coco
from yolov4.evaluation.result import METRIC_KEYS, EvaluationResult

__all__ = [
    "METRIC_KEYS",
    "CocoEvaluator",
    "EvaluationResult",
    "detections_to_coco",
    "evaluate_coco",
]
