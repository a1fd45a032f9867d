"""Inference: the Predictor and its backends. The Predictor's preprocessing settings are
:class:`yolov4.core.preprocess.PreprocessConfig`."""

from yolov4.inference.predictor import Detections, Predictor

__all__ = ["Detections", "Predictor"]
