"""Inference: the one preprocessing function, the Predictor and its backends."""

from yolov4.inference.predictor import Detections, Predictor
from yolov4.inference.preprocess import (
    LETTERBOX_PAD_VALUE,
    PreprocessConfig,
    preprocess,
    preprocess_batch,
)

__all__ = [
    "Detections",
    "LETTERBOX_PAD_VALUE",
    "Predictor",
    "PreprocessConfig",
    "preprocess",
    "preprocess_batch",
]
