"""A network's name with a cfg: the caller's label, else the file's stem; a zoo name given with
a cfg file of another network names it after the file, not as the zoo network it is not."""

from __future__ import annotations

import re

import pytest
import torch

from tests.models.test_cfg import BASE
from tests.models.test_zoo import meta_model, user_cfg
from yolov4 import ConfigError, build_model
from yolov4.darknet import write_darknet_cfg
from yolov4.models import ModelConfig
from yolov4.models.cfg import CFG_DIR, ZOO, parse_cfg
from yolov4.models.zoo import is_zoo_network


def test_a_zoo_name_with_a_cfg_file_of_another_network_is_named_after_the_file(tmp_path):
    path = tmp_path / "my-tiny.cfg"
    path.write_text(user_cfg())  # yolov4-tiny with a conv more in each head
    with torch.device("meta"):
        model = build_model("yolov4-tiny", cfg=path)
    assert model.config.name == "my-tiny"
    assert ModelConfig.from_dict(model.config.to_dict()).name == "my-tiny"  # rebuilt
    assert model.backbone_layer_count() == 29  # yolov4-tiny's backbone, its first 29 layers
    assert ModelConfig.load("yolov4", cfg=CFG_DIR / "yolov4-tiny.cfg").name == "yolov4-tiny"
    other = tmp_path / "net.cfg"
    other.write_text(BASE)
    with torch.device("meta"):
        model = build_model("yolov4-tiny", cfg=other, num_classes=None)
    with pytest.raises(ConfigError, match=r"^net \(cfg text\): no darknet partial file"):
        model.backbone_layer_count()


def test_a_zoo_networks_cfg_with_its_own_classes_anchors_and_size_keeps_the_zoo_name(tmp_path):
    text = (CFG_DIR / "yolov4-tiny.cfg").read_text()
    for old, new in [("classes=80", "classes=4"), ("filters=255", "filters=27"),
                     ("width=416", "width=320"), ("batch=64", "batch=16")]:  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    text = re.sub(
        r"anchors = [0-9, ]+", "anchors = 8,12, 20,30, 44,52, 70,96, 130,150, 300,280", text
    )
    path = tmp_path / "four.cfg"
    path.write_text(text)
    with torch.device("meta"):
        model = build_model("yolov4-tiny", cfg=path)
    assert model.config.name == "yolov4-tiny" and model.num_classes == 4
    assert model.backbone_layer_count() == 29
    assert ModelConfig.load("mine", cfg=path).name == "mine"  # a label that is no zoo name
    assert ModelConfig.load(cfg=path).name == "four"


@pytest.mark.parametrize("name", ZOO)
def test_a_written_zoo_cfg_is_its_network_and_no_other(name):
    written = parse_cfg(write_darknet_cfg(meta_model(name, num_classes=3)))
    assert [n for n in ZOO if is_zoo_network(n, written)] == [name]
