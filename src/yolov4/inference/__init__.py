"""Inference: the Predictor and its backends (PreprocessConfig and preprocess re-exported from
:mod:`yolov4.core.preprocess`, where they live)."""

from yolov4.core.preprocess import (
    LETTERBOX_PAD_VALUE,
    PreprocessConfig,
    preprocess,
    preprocess_batch,
)
from yolov4.inference.predictor import Detections, Predictor

__all__ = [
    "Detections",
    "LETTERBOX_PAD_VALUE",
    "Predictor",
    "PreprocessConfig",
    "preprocess",
    "preprocess_batch",
]
