"""The Predictor over zoo networks and a user's cfg: an artifact of a network built from a cfg file
carries the cfg's text and is served without the file; the model's own NMS (``nms_kind:
model``) and input size multiple come from the stored config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.zoo_cases import calibrate_, slim_cfg
from yolov4 import ModelConfig, build_model, save_checkpoint
from yolov4.core.artifact import read_metadata
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import InputError
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor

NAMES = ["a", "b"]


def test_a_user_cfg_artifact_is_served_without_the_cfg_file(tmp_path, randomize):
    cfg = tmp_path / "my-tiny.cfg"
    cfg.write_text(slim_cfg("yolov3-tiny", 2))
    torch.manual_seed(0)
    model = build_model(cfg=cfg, num_classes=2, input_size=[96, 128])
    calibrate_(randomize(model, seed=4), (96, 128))
    ckpt = save_checkpoint(tmp_path / "best.pt", model, NAMES, {"input_size": [96, 128]})
    cfg.unlink()
    art = export_artifact(ckpt, tmp_path / "export", ["onnx"], thresholds={"conf": 0.4})
    meta = read_metadata(art)
    assert meta["model"]["name"] == "my-tiny" and meta["model"]["cfg"] == model.config.cfg
    rebuilt = ModelConfig.from_dict(meta["model"])  # rebuilds from metadata alone
    assert rebuilt == replace(model.config, letter_box=meta["preprocess"]["mode"] == "letterbox")
    served = Predictor.from_artifact(art)
    local = Predictor.from_checkpoint(ckpt, thresholds=meta["thresholds"])
    image = np.random.default_rng(0).integers(0, 255, (120, 170, 3), dtype=np.uint8)
    [a], [b] = served(image), local(image)
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
    assert a.class_names == b.class_names


@pytest.mark.parametrize(
    "name, cfg, nms", [("yolov3-tiny", False, ("iou", 0.6)), ("yolov4-csp", True, ("diou", 0.6))]
)
def test_the_models_own_nms_comes_from_its_stored_config(name, cfg, nms):
    """``nms_kind: model``: darknet's nms_kind of the cfg, from the zoo name or the cfg text."""
    with torch.device("meta"):
        model = (
            build_model(f"{name}-slim", cfg=slim_cfg(name), num_classes=2)
            if cfg
            else build_model(name, num_classes=2)
        )
    meta = {"model": model.config.to_dict()}
    p = Predictor(lambda x: x, NAMES, PreprocessConfig(), {"nms_kind": "model"}, meta)
    assert (p.postprocess.nms_kind, p.postprocess.beta) == nms


def test_a_64_stride_network_is_fed_multiples_of_64(tmp_path, randomize):
    """yolov4-p6's structure: the Predictor letterboxes any image to the stored 64-multiple size
    (a 32-multiple would fail in the network); the network refuses a 32-multiple naming 64."""
    torch.manual_seed(0)
    model = build_model("p6", cfg=slim_cfg("yolov4-p6"), num_classes=2, input_size=[64, 128])
    ckpt = save_checkpoint(tmp_path / "p6.pt", model, NAMES, {"input_size": [64, 128]})
    p = Predictor.from_checkpoint(ckpt, thresholds={"conf": 0.99})
    assert p.input_size == (64, 128)
    images = [np.zeros((s, s + 7, 3), np.uint8) for s in (33, 100)]
    assert [d.image_size for d in p(images)] == [(33, 40), (100, 107)]
    with pytest.raises(InputError, match=r"multiples of 64.*e\.g\. \[128, 128\]"):
        model.eval()(torch.rand(1, 3, 96, 96))
