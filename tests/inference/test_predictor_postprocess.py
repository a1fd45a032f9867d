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


def test_boxes_in_the_letterbox_padding_take_no_max_det_place():
    """A 128x32 image in a 128x128 input lies in rows 48..80: confident boxes in the padding
    (dropped when mapped back) came first in NMS's order and took the max_det places, so a
    wide image got fewer boxes than max_det, or none."""
    padding = [[20.0 + 20 * i, 10.0, 10.0, 10.0, 0.95, 1.0] for i in range(5)]  # rows 5..15
    image_box = [64.0, 64.0, 20.0, 10.0, 0.5, 1.0]  # rows 59..69: in the image

    def model(images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([*padding, image_box]).expand(images.shape[0], -1, -1)

    p = Predictor(model, ["thing"], PreprocessConfig(input_size=(128, 128)))
    wide = np.zeros((32, 128, 3), np.uint8)
    for max_det in (1, 3, 100):
        (det,) = p(wide, max_det=max_det)
        np.testing.assert_allclose(det.scores, [0.5], rtol=1e-6)
        np.testing.assert_allclose(det.boxes, [[54, 11, 74, 21]], atol=1e-4)
    (square,) = p(np.zeros((128, 128, 3), np.uint8), max_det=3)  # no padding: all in the image
    np.testing.assert_allclose(square.scores, [0.95, 0.95, 0.95], rtol=1e-6)
