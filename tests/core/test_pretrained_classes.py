"""``module.pretrained=<darknet .weights of the same network for other classes>``: fine-tuning
as darknet's ``-clear`` does, every layer loaded but the convolutions before the ``[yolo]``
layers (whose shape follows ``num_classes``), which keep their initialisation."""

from __future__ import annotations

import logging

import pytest
import torch

from yolov4 import CheckpointError, build_model
from yolov4.core.pretrained import load_pretrained
from yolov4.darknet import darknet_file_classes, load_darknet_weights, save_darknet_weights
from yolov4.training.module import YoloModule

SIZE = [96, 96]


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory, randomize_module):
    """yolov3-tiny for 80 classes written by save_darknet_weights (a darknet COCO file)."""
    torch.manual_seed(0)
    source = randomize_module(build_model("yolov3-tiny", num_classes=80, input_size=SIZE), seed=2)
    path = tmp_path_factory.mktemp("coco") / "yolov3-tiny.weights"
    return source, save_darknet_weights(source, path, seen=64000)


@pytest.fixture(scope="module")
def randomize_module():
    from tests.conftest import randomize_

    return randomize_


def file_values(path, num_classes=80):
    """The file's tensors read back by darknet's own layout (an independent read of the file)."""
    model = build_model("yolov3-tiny", num_classes=num_classes, input_size=SIZE)
    load_darknet_weights(model, path)
    return model.state_dict()


def layer_of(key: str) -> int:
    return int(key.split(".")[1])


def test_the_file_classes_are_read_from_its_size(coco_file):
    _, path = coco_file
    config = build_model("yolov3-tiny", num_classes=4, input_size=SIZE).config
    assert darknet_file_classes(config, path) == 80
    other = build_model("yolov4-tiny", num_classes=4, input_size=SIZE).config
    assert darknet_file_classes(other, path) is None  # another network: no class count fits


def test_fine_tuning_on_4_classes_loads_all_but_the_head_convs(coco_file, caplog):
    source, path = coco_file
    torch.manual_seed(5)
    initial = build_model("yolov3-tiny", num_classes=4, input_size=SIZE).state_dict()
    torch.manual_seed(5)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        module = YoloModule(
            model={"name": "yolov3-tiny", "num_classes": 4, "input_size": SIZE},
            pretrained=str(path),
        )
    model = module.model
    heads = set(model.head_layers)
    assert heads == {15, 22}  # the convolutions before yolov3-tiny's two [yolo] layers
    expected = file_values(path)
    mine = model.state_dict()
    checked = 0
    for key, value in mine.items():
        if layer_of(key) in heads:  # re-initialised: the model's own initial values
            assert value.shape != expected[key].shape or not torch.equal(value, expected[key])
            assert torch.equal(value, initial[key]), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, expected[key]), key
            checked += 1
    assert checked == 11 * 5  # 11 conv layers with BN: kernel, beta, gamma, mean, var
    assert model.seen == 64000
    # the log names the loaded and the re-initialised layers
    text = caplog.text
    assert "with 80 classes (seen=64000) for 4 classes" in text
    assert "11 of 13 convolutional layers loaded (layers 0, 2, 4, 6, 8, 10, 12-14, 18, 21)" in text
    assert "re-initialised: layers 15, 22 (the [yolo] head convolutions)" in text
    # the EMA starts from the loaded weights
    assert torch.equal(module.ema.module.layers[13].conv.weight, expected["layers.13.conv.weight"])


def test_same_classes_partial_and_other_networks_as_before(coco_file, tmp_path):
    source, path = coco_file
    same = build_model("yolov3-tiny", num_classes=80, input_size=SIZE)
    assert "24 darknet layers (seen=64000)" in load_pretrained(same, path).summary
    same.eval()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    # a .conv.N file: layers 0..N-1 by its name, whatever the classes
    partial = save_darknet_weights(source, tmp_path / "yolov3-tiny.conv.15", upto=15)
    four = build_model("yolov3-tiny", num_classes=4, input_size=SIZE)
    assert "15 darknet layers" in load_pretrained(four, partial).summary
    # a file of another network is refused, naming what it fits
    with pytest.raises(CheckpointError, match="it fits yolov3-tiny with num_classes=80"):
        load_pretrained(build_model("yolov4-tiny", num_classes=4, input_size=SIZE), path)
