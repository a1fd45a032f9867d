"""COCO evaluation across ranks, its typed result, and its plots; beside it, what the mAP hides:
``analysis`` (confusion matrix, P/R/F1 against confidence), ``darknet_map`` (darknet's
``detector map`` report), ``tide`` (the TIDE error breakdown) and ``worst`` (the worst images),
at the settings of :class:`AnalysisConfig`, written as files by :mod:`~yolov4.evaluation.reports`;
:func:`evaluate_predictor` scores a Predictor from the image files."""

from yolov4.evaluation.analysis_config import AnalysisConfig
from yolov4.evaluation.coco import CocoEvaluator, detections_to_coco, evaluate_coco
from yolov4.evaluation.predictions import evaluate_predictor
from yolov4.evaluation.result import METRIC_KEYS, METRICS_FILE, EvaluationResult

__all__ = [
    "METRIC_KEYS",
    "METRICS_FILE",
    "AnalysisConfig",
    "CocoEvaluator",
    "EvaluationResult",
    "detections_to_coco",
    "evaluate_coco",
    "evaluate_predictor",
]
