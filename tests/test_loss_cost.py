"""darknet_cost: darknet's charted loss (get_network_cost / batch), checked against a loop
transcription of darknet's forward_yolo_layer deltas and cost (show_details=1, its default):
:mod:`tests.oracles.darknet_yolo_layer`, which the other loss tests compare the loss's gradient
with too."""

from __future__ import annotations

import pytest
import torch

from tests.oracles.darknet_yolo_layer import darknet_cost_loops
from yolov4.loss import YoloLoss, darknet_cost
from yolov4.models import ModelConfig


def case(name, seed, **overrides):
    torch.manual_seed(seed)
    cfg = ModelConfig.load(name, num_classes=3, input_size=[64, 64], **overrides)
    maps = [
        torch.randn(2, len(m) * 8, 64 // s, 64 // s) * 1.5
        for m, s in zip(cfg.masks, cfg.strides, strict=True)
    ]
    targets = torch.tensor(
        [
            [0, 1, 5.0, 5.0, 30.0, 40.0],
            [0, 2, 20.0, 8.0, 60.0, 30.0],
            [1, 0, 2.0, 40.0, 12.0, 63.0],
            [1, 1, 30.0, 30.0, 34.0, 36.0],
        ]
    )
    return cfg, maps, targets


# yolov3-tiny: iou_loss=mse (cost |delta|^2); yolov4-csp: new_coords, per-head normalizers and
# objectness_smooth
@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4", "yolov3-tiny", "yolov4-csp"])
@pytest.mark.parametrize("box_gradient", ["darknet", "exact"])
def test_darknet_cost_matches_loop_transcription(name, box_gradient):
    cfg, maps, targets = case(name, 0)
    loss_fn = YoloLoss.from_config(cfg, box_gradient=box_gradient)
    got = darknet_cost(loss_fn, maps, targets)
    want = darknet_cost_loops(cfg, maps, targets)
    assert got.shape == () and not got.requires_grad
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_darknet_cost_without_targets_is_the_no_object_push():
    cfg, maps, _ = case("yolov4-tiny", 1)
    empty = torch.zeros(0, 6)
    got = darknet_cost(YoloLoss.from_config(cfg), maps, empty)
    assert float(got) == pytest.approx(darknet_cost_loops(cfg, maps, empty), rel=1e-5)


def test_darknet_cost_with_label_smoothing():
    cfg, maps, targets = case("yolov4", 2)
    got = darknet_cost(YoloLoss.from_config(cfg, label_smoothing=0.1), maps, targets)
    want = darknet_cost_loops(cfg, maps, targets, label_smoothing=0.1)
    assert float(got) == pytest.approx(want, rel=1e-5)
