"""Fine-tuning darknet's COCO weights on a 4-class dataset as the README writes it:
``python train.py model=yolov3-tiny module.pretrained=yolov3-tiny.weights`` loads every layer of
the file but the convolutions before the ``[yolo]`` layers, which follow the classes."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch

from tests.conftest import randomize_
from yolov4 import build_model
from yolov4.cli.train import train
from yolov4.darknet import load_darknet_weights, save_darknet_weights


class FirstWeights(L.Callback):
    """The network's state when fitting starts (after module.pretrained=, before any step)."""

    state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer, module) -> None:
        self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@pytest.mark.slow
def test_train_py_fine_tunes_80_class_weights_on_4_classes(compose_cfg, tiny_run, tmp_path, caplog):
    torch.manual_seed(0)
    coco = randomize_(build_model("yolov3-tiny"), seed=1)  # 80 classes, as darknet's file
    path = save_darknet_weights(coco, tmp_path / "yolov3-tiny.weights")
    overrides = [
        *tiny_run,
        "model=yolov3-tiny",
        f"module.pretrained={path}",
        "trainer.limit_train_batches=1",
        "export=null",
    ]
    first = FirstWeights()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", overrides, tmp_path / "run"), extra_callbacks=[first])
    assert "re-initialised: layers 15, 22 (the [yolo] head convolutions)" in caplog.text
    # the file's values, read back by the darknet reader into an 80-class network
    expected = build_model("yolov3-tiny")
    load_darknet_weights(expected, path)
    expected = expected.state_dict()
    heads = {15, 22}
    compared = 0
    for key, value in first.state.items():
        layer = int(key.split(".")[1])
        if key.endswith("num_batches_tracked"):
            continue
        if layer in heads:
            assert value.shape[0] == 3 * (5 + 4) != expected[key].shape[0]  # 4 classes, 3 anchors
        else:
            assert torch.equal(value, expected[key]), key
            compared += 1
    assert compared == 11 * 5  # 11 convolutions with BN: kernel, beta, gamma, mean, var
