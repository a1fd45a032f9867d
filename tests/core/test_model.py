"""Network + decode: the one module every backend, export and evaluation path runs."""

from __future__ import annotations

import pytest
import torch

from yolov4 import build_model
from yolov4.core.model import DecodedModel
from yolov4.ops.decode import decode_predictions


@pytest.mark.parametrize("new_coords", [False, True])
def test_decoded_model_decodes_as_the_model_config_says(new_coords, randomize):
    # random head biases: at init tw = 0, where exp(t) and 4 * sigmoid(t)^2 are both 1
    model = randomize(build_model("yolov4-tiny", num_classes=2, new_coords=new_coords)).eval()
    c = model.config
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        got = DecodedModel(model)(x)
        maps = model(x)
    want = decode_predictions(maps, c.head_anchors(), c.strides, c.scale_x_y, new_coords)
    other = decode_predictions(maps, c.head_anchors(), c.strides, c.scale_x_y, not new_coords)
    assert torch.equal(got, want)
    assert not torch.allclose(got[..., 2:4], other[..., 2:4])  # the flag changes w, h
