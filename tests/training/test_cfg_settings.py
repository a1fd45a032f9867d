"""A user's darknet cfg carries darknet's training recipe ([net] learning_rate, burn_in, batch,
mosaic, size, letter_box; [yolo] jitter, random); train.py takes training from its own config and
logs the cfg's values beside the run's; an input size or resize mode other than the cfg's, or a
cfg class count other than the dataset's, is a warning."""

from __future__ import annotations

import logging

from yolov4 import build_model
from yolov4.darknet import write_darknet_cfg
from yolov4.models import ModelConfig
from yolov4.training.cfg_settings import cfg_settings_not_used, log_cfg_classes, log_cfg_settings

RUN = {
    "optim.lr": 0.002,
    "optim.burn_in": 100,
    "nominal_batch": None,
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
    assert "batch=64 (nominal_batch=None)" in settings
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


def test_training_keys_without_an_equivalent_are_named_too():
    extra = {"subdivisions": "8", "angle": "5", "blur": "1", "mixup": "1", "cutmix": "1"}
    extra |= {"gaussian_noise": "1", "adversarial_lr": "0.05"}
    config = user_config(**extra)
    text = config.cfg.replace("[yolo]\n", "[yolo]\nmax=200\n")
    config = ModelConfig.load(cfg=text, name="mine")
    settings = cfg_settings_not_used(config, {**RUN, "trainer.accumulate_grad_batches": 1}.get)[0]
    assert "subdivisions=8 (trainer.accumulate_grad_batches=1)" in settings
    for key, value in extra.items():
        if key != "subdivisions":
            assert f"{key}={value} (no equivalent here)" in settings
    assert "[yolo] max=200 (no equivalent here)" in settings
    assert not any(s.startswith(("width", "height", "channels")) for s in settings)


def cfg_classes_log(caplog, config: ModelConfig, num_classes: int, run: dict) -> list:
    with caplog.at_level(logging.INFO, logger="yolov4"):
        log_cfg_classes(config, num_classes, run.get)
    return [r for r in caplog.records if r.name.endswith("cfg_settings")]


def test_a_cfg_class_count_other_than_the_datasets_is_one_line(caplog):
    run = {"model.cfg": "darknet/cfg/mine.cfg", "data.train.names": "darknet/data/obj.data"}
    assert cfg_classes_log(caplog, user_config(), 4, run) == []  # the cfg agrees with the data
    (record,) = cfg_classes_log(caplog, user_config(), 3, run)
    assert record.levelno == logging.WARNING
    assert record.message == (
        "darknet/cfg/mine.cfg has [yolo] classes=4, the dataset 3 classes "
        "(data.train.names=darknet/data/obj.data): the run trains the dataset's 3 (the "
        "convolutions before the [yolo] layers get filters=24); set classes=3 in its [yolo] "
        "layers to match"
    )
    caplog.clear()
    run = {"data.file": "darknet/data/obj.data", "data.train.names": "darknet/data/obj.data"}
    (record,) = cfg_classes_log(caplog, user_config(), 3, run)  # names filled from data.file=
    assert "the dataset 3 classes (data.file=darknet/data/obj.data): " in record.message
    caplog.clear()
    (record,) = cfg_classes_log(caplog, ModelConfig.load("yolov4-tiny"), 3, {})
    assert record.levelno == logging.INFO
    assert record.message.startswith("yolov4-tiny.cfg has [yolo] classes=80, the dataset 3 ")
