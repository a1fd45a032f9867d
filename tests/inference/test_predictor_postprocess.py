"""``Predictor.__call__(postprocess=...)``: one call's settings in place of the predictor's
serving thresholds, which stay as they are."""

from __future__ import annotations

import numpy as np
import torch

from yolov4.core.postprocess import DARKNET_VALID, SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.inference import Predictor

# two overlapping boxes and one faint box: (cx, cy, w, h, objectness, class score)
ROWS = [
    [30.0, 30.0, 20.0, 20.0, 0.9, 1.0],
    [32.0, 30.0, 20.0, 20.0, 0.8, 1.0],  # IoU 0.818 with the first: NMS 0.45 and 0.6 drop it
    [90.0, 60.0, 10.0, 10.0, 0.05, 1.0],  # under SERVING's conf 0.25, over DARKNET_VALID's
]


def backend(images: torch.Tensor) -> torch.Tensor:
    return torch.tensor(ROWS).expand(images.shape[0], -1, -1)


def test_a_call_uses_the_postprocess_given_and_leaves_the_predictor_as_it_was():
    p = Predictor(backend, ["thing"], PreprocessConfig(input_size=(96, 128)))
    image = np.zeros((96, 128, 3), np.uint8)
    serving = p.postprocess
    assert serving == SERVING
    (default,) = p(image)
    (valid,) = p(image, postprocess=DARKNET_VALID)
    np.testing.assert_allclose(default.scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(valid.scores, [0.9, 0.05], rtol=1e-6)
    assert p.postprocess is serving  # untouched
    (again,) = p(image)
    np.testing.assert_allclose(again.scores, [0.9], rtol=1e-6)
    # conf / max_det of the call still apply on top of the postprocess given
    (capped,) = p(image, postprocess=DARKNET_VALID, max_det=1)
    (raised,) = p(image, postprocess=DARKNET_VALID, conf=0.5)
    np.testing.assert_allclose(capped.scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(raised.scores, [0.9], rtol=1e-6)
    (loose,) = p(image, postprocess=DARKNET_VALID.replace(iou=0.9))
    np.testing.assert_allclose(loose.scores, [0.9, 0.8, 0.05], rtol=1e-6)
