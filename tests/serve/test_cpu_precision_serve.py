"""yolov4-serve says which precision it serves and why when the artifact left the choice to the
CPU (default_precision auto): the Predictor's reason is on the ``ready:`` line."""

from __future__ import annotations

import logging
import warnings

import torch

from yolov4.core.preprocess import PreprocessConfig
from yolov4.inference import Predictor
from yolov4.serve import ServeSettings, create_app

with warnings.catch_warnings():  # starlette would rather see httpx2; httpx is what we install
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient


def zeros(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros(images.shape[0], 1, 6)


def ready_line(predictor: Predictor, caplog) -> str:
    with (
        caplog.at_level(logging.INFO, "yolov4.serve"),
        TestClient(create_app(ServeSettings(), predictor)) as c,
    ):
        assert c.get("/readyz").status_code == 200
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready: ")]
    return line


def test_ready_line_carries_the_choice(caplog):
    predictor = Predictor(zeros, ["thing"], PreprocessConfig(input_size=(64, 64)))
    predictor.precision_reason = "precision auto -> int8: the expected fastest (avx2, fma)"
    assert ready_line(predictor, caplog).endswith(f", fp32 ({predictor.precision_reason})")


def test_ready_line_without_a_choice(caplog):
    predictor = Predictor(zeros, ["thing"], PreprocessConfig(input_size=(64, 64)))
    assert ready_line(predictor, caplog).endswith(", fp32")
