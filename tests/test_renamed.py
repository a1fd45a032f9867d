"""Public names renamed for clarity stay importable for one release under their old names, each
with a DeprecationWarning naming the new one, and doing exactly what the new name does."""

from __future__ import annotations

import importlib
import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from yolov4 import build_model
from yolov4.core.images import decode_image_details
from yolov4.ops import decode_predictions


def test_evaluation_errors_module_is_the_tide_module_and_warns(monkeypatch):
    import yolov4.evaluation.tide as tide

    monkeypatch.delitem(sys.modules, "yolov4.evaluation.errors", raising=False)
    with pytest.warns(DeprecationWarning, match=r"yolov4\.evaluation\.tide"):
        old = importlib.import_module("yolov4.evaluation.errors")
    for name in old.__all__:
        assert getattr(old, name) is getattr(tide, name)


def test_ops_decode_is_decode_predictions_and_warns():
    import yolov4.ops
    from yolov4.ops.decode import decode as from_module

    net = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]).eval()
    with torch.no_grad():
        maps = net(torch.rand(1, 3, 64, 64))
    c = net.config
    args = (maps, c.head_anchors(), c.strides, c.scale_x_y)
    want = decode_predictions(*args)
    for old in (yolov4.ops.decode, from_module):
        with pytest.warns(DeprecationWarning, match="decode_predictions"):
            assert torch.equal(old(*args), want)


def test_core_images_decode_is_decode_image_details_and_warns():
    from yolov4.core import images

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    with pytest.warns(DeprecationWarning, match="decode_image_details"):
        old = images.decode(data)
    new = decode_image_details(data)
    assert np.array_equal(old.image, new.image) and np.array_equal(new.image, pixels)
    assert (old.format, old.converted) == (new.format, new.converted) == ("PNG", False)


def test_yolomodule_takes_eval_and_compile_under_their_old_names():
    from yolov4.training.module import YoloModule

    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]).config.to_dict()
    with pytest.warns(DeprecationWarning, match=r"YoloModule\(val_postprocess=\)"):
        old = YoloModule(model=model, ema_decay=None, eval={"max_det": 3}, compile=False)
    new = YoloModule(model=model, ema_decay=None, val_postprocess={"max_det": 3})
    assert old.hparams["val_postprocess"] == new.hparams["val_postprocess"]
    assert old.hparams["val_postprocess"]["max_det"] == 3
    assert "eval" not in old.hparams and old.hparams["compile_model"] is False
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['evaluate'\]"):
        YoloModule(model=model, evaluate={})
