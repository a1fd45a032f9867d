"""Every darknet [yolo] key of the model config is checked (allowed values named in the error)
and read where darknet reads it: ``iou_loss`` by the loss, ``nms_kind``/``beta_nms`` as the
model's default NMS."""

from __future__ import annotations

import pytest
import torch

from yolov4 import ConfigError, build_model
from yolov4.loss import YoloLoss
from yolov4.models.config import IOU_LOSSES, NMS_KINDS, ModelConfig


@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            "iou_loss",
            "banana",
            r"model.iou_loss must be one of \['mse', 'iou', 'giou', 'diou', 'ciou'\]",
        ),
        ("nms_kind", "whatever", r"model.nms_kind must be one of \['default', 'greedynms'"),
        ("beta_nms", -5, r"model.beta_nms must be a number in \(0, inf\], got -5"),
        ("beta_nms", 0, "model.beta_nms"),
        ("ignore_thresh", 1.5, r"model.ignore_thresh must be a number in \[0, 1\], got 1.5"),
        ("truth_thresh", 0, "model.truth_thresh"),
        ("truth_thresh", 0.9, r"model.truth_thresh must be >= 1 \(darknet's .* got 0.9"),
        ("iou_thresh", 0.0, "model.iou_thresh"),
        ("iou_thresh", 2.0, "model.iou_thresh"),
        ("iou_normalizer", -0.07, "model.iou_normalizer"),
        ("cls_normalizer", "x", "model.cls_normalizer"),
        ("obj_normalizer", -1, "model.obj_normalizer"),
        ("max_delta", 0, "model.max_delta"),
        ("scale_x_y", [0.0, 1.05], r"model.scale_x_y of head 0 \(stride 16\) must be a finite"),
        ("scale_x_y", [1.05, -1], r"model.scale_x_y of head 1 \(stride 32\) .* > 0, got -1$"),
        ("scale_x_y", [1.05, float("inf")], r"model.scale_x_y of head 1 .*, got inf"),
        ("new_coords", 1, r"model.new_coords must be true or false, got 1"),
        # "not enough values to unpack (expected 2, got 1)", naming no key
        ("anchors", "autoo", r"model.anchors='autoo': expected \[\[w, h\], ...\] pairs, auto"),
    ],
)
def test_bad_value_is_refused_naming_key_and_allowed_values(key, value, match):
    with pytest.raises(ConfigError, match=match):
        build_model("yolov4-tiny", num_classes=3, **{key: value})


@pytest.mark.parametrize("kind", IOU_LOSSES)
def test_every_allowed_value_builds(kind):
    assert build_model("yolov4-tiny", num_classes=2, iou_loss=kind).config.iou_loss == kind


def test_iou_loss_is_read_by_the_loss():
    """The box term differs with iou_loss as the overlap measure does: IoU >= DIoU and GIoU, and
    CIoU <= DIoU, so 1 - overlap orders the other way."""
    torch.manual_seed(0)
    maps = [torch.randn(1, 3 * (5 + 2), 4, 4), torch.randn(1, 3 * (5 + 2), 2, 2)]
    targets = torch.tensor([[0, 1, 10.0, 12.0, 40.0, 50.0], [0, 0, 30.0, 5.0, 60.0, 25.0]])
    box = {}
    for kind in IOU_LOSSES:
        config = ModelConfig.load("yolov4-tiny", num_classes=2, input_size=[64, 64], iou_loss=kind)
        loss_fn = YoloLoss.from_config(config)
        assert loss_fn.iou_loss == kind
        box[kind] = loss_fn(maps, targets).box.item()
    assert len(set(box.values())) == len(IOU_LOSSES)
    assert box["iou"] < box["diou"] < box["ciou"]
    assert box["iou"] < box["giou"]


@pytest.mark.parametrize(
    "nms_kind, beta, expected",
    [
        ("greedynms", 0.6, ("diou", 0.6)),
        ("diounms", 0.8, ("diou", 0.8)),
        ("default", 0.6, ("iou", 0.6)),
    ],
)
def test_nms_kind_and_beta_give_the_models_default_nms(nms_kind, beta, expected):
    config = build_model("yolov4-tiny", num_classes=2, nms_kind=nms_kind, beta_nms=beta).config
    assert config.default_nms == expected
    assert set(NMS_KINDS) == {"default", "greedynms", "diounms"}


def test_new_coords_is_written_to_the_cfg_only_when_true_and_read_by_the_loss():
    from yolov4.darknet import write_darknet_cfg

    plain = build_model("yolov4-tiny", num_classes=2)
    assert plain.config.new_coords is False
    assert "new_coords" not in write_darknet_cfg(plain, (64, 64))
    assert YoloLoss.from_config(plain.config).new_coords is False
    model = build_model("yolov4-tiny", num_classes=2, new_coords=True, scale_x_y=[2.0, 2.0])
    text = write_darknet_cfg(model, (64, 64))
    assert text.count("new_coords=1") == 2 == text.count("[yolo]")
    # the conv in front of each [yolo] is logistic (darknet's new_coords layer does not activate)
    assert [sec.rsplit("activation=", 1)[1].split()[0] for sec in text.split("[yolo]")[:-1]] == [
        "logistic",
        "logistic",
    ]
    assert "activation=logistic" not in write_darknet_cfg(plain, (64, 64))
    assert YoloLoss.from_config(model.config).new_coords is True
    assert ModelConfig.from_dict(model.config.to_dict()).new_coords is True
