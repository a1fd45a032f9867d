"""A user's darknet cfg carries darknet's training recipe ([net] learning_rate, burn_in, batch,
mosaic, size, letter_box; [yolo] jitter, random); train.py takes training from its own config,
and dropped those values without a word. They are now logged beside the run's values, and an
input size or resize mode other than the cfg's is a warning."""

from __future__ import annotations

import logging

from yolov4 import build_model
from yolov4.darknet import write_darknet_cfg
from yolov4.models import ModelConfig
from yolov4.training.cfg_settings import cfg_settings_not_used, log_cfg_settings

RUN = {
    "optim.lr": 0.002,
    "optim.burn_in": 100,
    "data.batch_size": 16,
    "augment.mosaic": 1.0,
    "augment.jitter": None,
    "augment.resize": 1.0,
    "data.input_size": [256, 256],
    "data.resize_mode": "letterbox",
}


def user_config(**net: str) -> ModelConfig:
    text = write_darknet_cfg(build_model("yolov4-tiny", num_classes=4), input_size=(128, 160))
    for key, value in net.items():
        text = text.replace("[net]\n", f"[net]\n{key}={value}\n", 1)
    return ModelConfig.load(cfg=text, name="mine")


def test_the_cfgs_training_settings_are_named_beside_the_runs():
    settings, inputs = cfg_settings_not_used(user_config(), RUN.get)
    assert "learning_rate=0.00261 (optim.lr=0.002)" in settings
    assert "burn_in=1000 (optim.burn_in=100)" in settings
    assert "batch=64 (data.batch_size=16)" in settings
    assert "[yolo] jitter=.3 (augment.jitter=None)" in settings
    assert "[yolo] resize=1.5 (augment.resize=1.0)" in settings
    assert inputs == [
        "height=128 width=160 (data.input_size=[256, 256]; data.input_size=[128,160] trains at "
        "the cfg's size)",
        "letter_box=0 (data.resize_mode=letterbox; the cfg's darknet training resized by stretch)",
    ]
    same = {**RUN, "data.input_size": [128, 160], "data.resize_mode": "stretch"}
    assert cfg_settings_not_used(user_config(), same.get)[1] == []


def test_zoo_networks_say_nothing_and_the_log_has_both_levels(caplog):
    assert cfg_settings_not_used(ModelConfig.load("yolov4-tiny"), RUN.get) == ([], [])
    with caplog.at_level(logging.INFO, logger="yolov4"):
        log_cfg_settings(user_config(), RUN.get)
    info, warning = (r for r in caplog.records if r.name.endswith("cfg_settings"))
    assert info.levelno == logging.INFO and "darknet training settings are not read" in info.message
    assert warning.levelno == logging.WARNING and "height=128 width=160" in warning.message
