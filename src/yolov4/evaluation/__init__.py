"""COCO evaluation across ranks, and its plots."""

from yolov4.evaluation.coco import METRIC_KEYS, CocoEvaluator, detections_to_coco, evaluate_coco

__all__ = ["METRIC_KEYS", "CocoEvaluator", "detections_to_coco", "evaluate_coco"]
