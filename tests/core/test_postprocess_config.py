"""One postprocess settings object: its presets, the YAMLs that mirror them, and every user
(YoloModule, Predictor, artifact metadata, NMS-in-graph export) reading the same values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import yolov4
from yolov4 import ConfigError, build_model
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import DARKNET_VALID, SERVING, PostprocessConfig
from yolov4.ops.postprocess import postprocess

CONFIGS = Path(yolov4.__file__).resolve().parent / "configs"


def test_presets_are_darknets_valid_and_test_settings():
    assert (DARKNET_VALID.conf, DARKNET_VALID.iou, DARKNET_VALID.max_det) == (0.001, 0.6, 300)
    assert (SERVING.conf, SERVING.iou) == (0.25, 0.45)


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_yaml_val_postprocess_block_mirrors_the_darknet_valid_preset(name):
    """train.yaml and evaluate.yaml both take `module.val_postprocess` from configs/module/default.yaml."""
    defaults = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["defaults"]
    (option,) = [d["module"] for d in defaults if isinstance(d, dict) and "module" in d]
    block = yaml.safe_load((CONFIGS / "module" / f"{option}.yaml").read_text())["val_postprocess"]
    assert PostprocessConfig(**block) == DARKNET_VALID


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("conf", 1.5, r"conf must be a number in \[0, 1\], got 1.5"),
        ("iou", -0.1, r"iou must be a number in \[0, 1\]"),
        ("nms_kind", "soft", r"nms_kind must be one of \['iou', 'diou', 'model'\], got 'soft'"),
        ("beta", 0, "beta must be a number > 0"),
        ("conf", float("nan"), r"conf must be a number in \[0, 1\], got NaN$"),
        ("iou", np.float32("inf"), r"iou must be a number in \[0, 1\], got infinity$"),
        ("beta", float("-inf"), r"beta must be a number > 0, got -infinity$"),
        ("multi_label", "yes", "multi_label must be true or false"),
        ("agnostic_nms", 1, "agnostic_nms must be true or false, got 1"),
        ("max_det", 0, "max_det must be an integer >= 1"),
        ("max_candidates", 2.5, "max_candidates must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        SERVING.replace(**{key: value})


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match=r"unknown postprocess key\(s\) \['conf_thresh'\]"):
        DARKNET_VALID.update({"conf_thresh": 0.1})


def test_model_nms_is_the_model_cfgs_nms_kind_and_beta():
    config = build_model("yolov4-tiny", num_classes=2, nms_kind="greedynms", beta_nms=0.8).config
    resolved = SERVING.replace(nms_kind="model").resolve(config)
    assert (resolved.nms_kind, resolved.beta) == ("diou", 0.8)
    plain = build_model("yolov4-tiny", num_classes=2, nms_kind="default").config
    assert SERVING.replace(nms_kind="model").resolve(plain).nms_kind == "iou"
    with pytest.raises(ConfigError, match="resolved"):
        SERVING.replace(nms_kind="model")(torch.rand(1, 5, 7), (64, 64))


def test_calling_the_settings_is_ops_postprocess_with_them():
    torch.manual_seed(0)
    pred = torch.rand(2, 200, 7) * torch.tensor([64, 64, 20, 20, 1, 1, 1])
    for agnostic in (False, True):
        settings = PostprocessConfig(
            conf=0.3, iou=0.5, nms_kind="diou", beta=0.7, max_det=9, agnostic_nms=agnostic
        )
        got = settings(pred, (64, 64))
        ref = postprocess(pred, (64, 64), conf_thresh=0.3, iou_thresh=0.5, nms_kind="diou",
                          beta=0.7, max_det=9, agnostic_nms=agnostic)  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


def test_yolomodule_validates_with_its_eval_settings():
    from yolov4.training.module import YoloModule

    model_cfg = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]).config.to_dict()
    module = YoloModule(
        model=model_cfg, ema_decay=None, val_postprocess={"conf": 0.2, "max_det": 3}
    )
    assert module.hparams["val_postprocess"] == DARKNET_VALID.replace(conf=0.2, max_det=3).to_dict()
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    dets = module.predict_batch({"images": images})
    module.model.eval()
    with torch.no_grad():
        preds = DecodedModel(module.model)(images)
    ref = postprocess(preds, (64, 64), conf_thresh=0.2, iou_thresh=0.6, max_det=3)
    assert all(torch.equal(a, b) for a, b in zip(dets, ref, strict=True))
    with pytest.raises(ConfigError, match="unknown postprocess key"):
        YoloModule(model=model_cfg, ema_decay=None, val_postprocess={"conf_thresh": 0.2})
