"""Inference: the one preprocessing function (and, later, the Predictor and its backends)."""

from yolov4.inference.preprocess import (
    LETTERBOX_PAD_VALUE,
    PreprocessConfig,
    preprocess,
    preprocess_batch,
)

__all__ = ["LETTERBOX_PAD_VALUE", "PreprocessConfig", "preprocess", "preprocess_batch"]
