"""The zoo through the command line: every ``experiment=coco_*`` recipe of a zoo network is its
darknet cfg's ``[net]`` training section, and ``train.py`` runs end to end with a Scaled-YOLOv4
zoo network and with a user's own darknet cfg (``model=darknet model.cfg=...``), its checkpoint
rebuilding the network."""

from __future__ import annotations

import logging
import sys
from unittest import mock

import cv2
import pytest
import torch
from hydra import compose, initialize_config_module

from tests.models.test_zoo import opencv_outputs
from tests.test_darknet import assert_maps_equal
from yolov4 import build_model, load_checkpoint
from yolov4.cli.common import build, model_config
from yolov4.cli.train import train
from yolov4.darknet import load_darknet_weights, save_darknet_weights
from yolov4.models import ModelConfig
from yolov4.models.cfg import Section, parse_cfg, read_zoo_cfg
from yolov4.models.zoo import PUBLISHED
from yolov4.training.nominal_batch import accumulation
from yolov4.training.optim import lr_factor

# experiment -> the zoo network whose cfg it follows
RECIPES = {
    "coco_yolov4": "yolov4",
    "coco_yolov4_tiny": "yolov4-tiny",
    "coco_yolov4_csp": "yolov4-csp",
    "coco_yolov4x_mish": "yolov4x-mish",
    "coco_yolov4_p5": "yolov4-p5",
    "coco_yolov4_p6": "yolov4-p6",
    "coco_yolov3": "yolov3",
}
DARKNET_RANDOM_COEF = 1.4  # detector.c: random=1 resizes by [1/1.4, 1.4]


def cfg_sections(name: str) -> tuple[Section, list[Section]]:
    sections = parse_cfg(read_zoo_cfg(name), f"{name}.cfg")
    return sections[0], [s for s in sections if s.kind == "yolo"]


def yolo_key(yolos: list[Section], key: str, default: float) -> float:
    """A [yolo] augmentation key as darknet's train_detector reads it: from the last [yolo]
    layer (yolov4.cfg sets random=1 there only)."""
    return yolos[-1].get_float(key, default)


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipe_is_the_cfgs_net_section(experiment, tmp_path):
    name = RECIPES[experiment]
    net, yolos = cfg_sections(name)
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        # as the command line composes it (data=coco has no cache_dir for the shared fixture)
        cfg = compose("train", [f"paths.output_dir={tmp_path}", f"experiment={experiment}"])
    assert cfg.model.name == name
    assert cfg.data.train._target_ == "yolov4.data.coco.CocoSource"  # data=coco
    assert cfg.trainer.accelerator == "gpu"

    # input: the size of darknet's published AP (the cfg's own, except yolov4-csp: its cfg
    # ships 512, the published 48.7 AP is the same weights at 640)
    size = [PUBLISHED[name][0]] * 2
    assert list(cfg.data.input_size) == size
    if name != "yolov4-csp":
        assert size == [net.get_int("height"), net.get_int("width")]
    assert cfg.data.resize_mode == ("letterbox" if net.get_int("letter_box", 0) else "stretch")
    model = ModelConfig.from_dict(model_config(cfg, 80))  # valid: multiples of the max stride
    assert list(model.input_size) == size and model.name == name

    # nominal batch: darknet's batch (yolov3.cfg ships its test setting, batch=1; it trains at 64)
    nominal = net.get_int("batch") if net.get_int("batch") > 1 else 64
    assert cfg.nominal_batch == nominal
    assert cfg.data.batch_size * accumulation(cfg.nominal_batch, cfg.data.batch_size, 1) == nominal
    if net.get_int("subdivisions") > 1:
        assert cfg.data.batch_size == nominal // net.get_int("subdivisions")

    # optimiser and schedule: darknet's [net] learning-rate policy
    optim = build(cfg, "optim")
    assert optim.optimizer == "sgd" and optim.schedule == net.options["policy"] == "steps"
    assert optim.lr == net.get_float("learning_rate")
    assert optim.momentum == net.get_float("momentum")
    assert optim.weight_decay == net.get_float("decay")
    assert optim.burn_in == net.get_int("burn_in") and optim.burn_in_power == 4.0
    assert optim.scales == net.get_floats("scales")
    total = cfg.trainer.max_steps
    assert total == net.get_int("max_batches") and cfg.trainer.max_epochs is None
    steps = net.get_ints("steps")
    assert [round(f * total) for f in optim.steps] == steps
    # darknet multiplies the rate by scales[i] from its update steps[i] (counted from 1) on:
    # the 0-based optimizer step steps[i] - 1
    factors = [lr_factor(s + d, total, optim) for s in steps for d in (-2, -1)]
    assert factors == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert lr_factor(0, total, optim) == pytest.approx((1 / optim.burn_in) ** 4)

    # EMA: darknet's ema_alpha (no key: no EMA)
    assert cfg.module.ema_decay == net.get_float("ema_alpha")
    if (
        cfg.module.ema_decay
    ):  # averaged as darknet: constant, from max_batches / 2, copied 1000 before the end
        window = (cfg.module.ema_tau, cfg.module.ema_start, cfg.module.ema_apply_before_end)
        assert window == (None, 0.5, 1000)

    # augmentation: [net] and [yolo] keys mapped onto augment.*
    augment = build(cfg, "augment")
    # darknet makes each loader thread's share of a batch a mosaic with even odds: half
    assert augment.mosaic == 0.5 * net.get_float("mosaic", 0.0)
    assert tuple(augment.mosaic_center) == (0.2, 0.8)  # data.c: cut at 20 % to 80 %
    assert cfg.module.val_postprocess.nms_kind == "model"  # darknet's valid: the cfg's NMS
    assert augment.hue == net.get_float("hue")
    assert augment.saturation == net.get_float("saturation")
    assert augment.exposure == net.get_float("exposure")
    assert augment.flip == 0.5 * net.get_int("flip", 1)
    jitter = yolo_key(yolos, "jitter", 0.2)
    resize = yolo_key(yolos, "resize", 1.0)
    assert (augment.jitter, augment.resize) == pytest.approx((jitter, resize))  # darknet's crop
    assert augment.scale == (1.0, 1.0) and augment.translate == 0.0
    random = yolo_key(yolos, "random", 0.0)
    expected = None if random == 0 else DARKNET_RANDOM_COEF if random == 1 else random
    assert augment.multi_scale == expected


def test_recipes_cover_the_headline_zoo_networks():
    from importlib.resources import files

    shipped = {
        p.name[: -len(".yaml")] for p in files("yolov4.configs").joinpath("experiment").iterdir()
    }
    assert set(RECIPES) <= shipped


# A user's own darknet network: a few layers of every kind the builder reads, two [yolo] heads
# with darknet's default keys (iou_loss absent: mse), classes=80 (train.py takes the dataset's 4)
USER_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=64
size=3
stride=2
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=64
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
ignore_thresh=.7

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,-7

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
ignore_thresh=.7
"""


def rebuilds(run, name: str, num_classes: int = 4) -> None:
    """weights/last.pt rebuilds the network from its stored config alone (strict), equal to
    load_checkpoint of the Lightning checkpoint and to a darknet .weights round trip."""
    raw = torch.load(run / "weights/last.pt", weights_only=True)
    model = build_model(**raw["model"]).eval()
    model.load_state_dict(raw["state_dict"], strict=True)
    assert model.config.name == name and model.config.num_classes == num_classes
    from_ckpt = load_checkpoint(run / "checkpoints/last.ckpt").model
    assert from_ckpt.config == model.config
    weights = save_darknet_weights(model, run / "m.weights")
    from_darknet = build_model(**raw["model"]).eval()
    load_darknet_weights(from_darknet, weights)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b, c in zip(model(x), from_ckpt(x), from_darknet(x)):
            assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.slow  # trains yolov4-csp; every recipe still composes by default
def test_train_a_scaled_yolov4_zoo_network(compose_cfg, tiny_run, tmp_path):
    """model=yolov4-csp (new_coords, CIoU, letterbox) trains one tiny epoch and validates."""
    run = tmp_path / "run"
    # a 52M-parameter network, kept quick: SGD (AdamW's CPU step is seconds here), no EMA copy,
    # no second (best) checkpoint, no export
    light = ["optim=sgd", "module.ema_decay=null", "callbacks.best_checkpoint=null", "export=null"]
    metrics = train(compose_cfg("train", [*tiny_run, "model=yolov4-csp", *light], run))
    assert metrics["num_images"] == 6 and 0.0 <= metrics["mAP"] <= 1.0
    rebuilds(run, "yolov4-csp")
    assert load_checkpoint(run / "weights/last.pt").model.config.new_coords


def test_train_a_user_darknet_cfg(compose_cfg, tiny_run, tmp_path):
    """model=darknet model.cfg=mine.cfg: the network, anchors and [yolo] keys come from the file,
    whose text the checkpoint carries: it rebuilds after the file is gone."""
    cfg_file = tmp_path / "mine.cfg"
    cfg_file.write_text(USER_CFG)
    run = tmp_path / "run"
    metrics = train(
        compose_cfg("train", [*tiny_run, "model=darknet", f"model.cfg={cfg_file}"], run)
    )
    assert metrics["num_images"] == 6
    assert (run / "export/model.onnx").is_file()
    cfg_file.unlink()
    rebuilds(run, "mine")
    config = load_checkpoint(run / "weights/last.pt").model.config
    assert config.iou_loss == "mse" and config.strides == (16, 32)
    assert config.cfg is not None and "group_id=1" in config.cfg
    # darknet_files=auto: best.pt's network as darknet files, which OpenCV reads as best.pt
    best = load_checkpoint(run / "weights/best.pt")
    images = torch.rand(1, 3, *best.preprocess.input_size)
    net = cv2.dnn.readNetFromDarknet(
        str(run / "weights/best.cfg"), str(run / "weights/best.weights")
    )
    assert_maps_equal(best.model.eval(), opencv_outputs(best.model, net, images)[0], images)
    written = build_model(cfg=(run / "weights/best.cfg").read_text())
    header = load_darknet_weights(written, run / "weights/best.weights")
    assert header.seen == best.trained["step"] * 4  # steps times data.batch_size
    # and best.names, the run's class names, one a line
    assert (run / "weights/best.names").read_text().splitlines() == best.class_names


def test_a_cfg_warning_is_in_the_runs_train_log_once(tiny_run, synthetic_cache, tmp_path):
    """``python train.py model=darknet model.cfg=mine.cfg`` (Hydra's app, in-process) with a key
    darknet does not read: the warning naming its line is in the run's train.log, once, though
    the run builds the network several times (EMA copy, checkpoints, export)."""
    from hydra.core.global_hydra import GlobalHydra

    from yolov4.cli.train import hydra_main
    from yolov4.models import cfg as cfg_module

    text = USER_CFG.replace("activation=mish\n", "activation=mish\nfoo=1\n", 1)
    cfg_file = tmp_path / "mine.cfg"
    cfg_file.write_text(text)
    run = tmp_path / "run"
    argv = ["train.py", *tiny_run, "model=darknet", f"model.cfg={cfg_file}", "analysis.plots=false",
            "darknet_files=false",
            f"data.cache_dir={synthetic_cache}", f"hydra.run.dir={run}"]  # fmt: skip
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with mock.patch.object(sys, "argv", argv), mock.patch.object(cfg_module, "_WARNED", set()):
            hydra_main()  # _WARNED: this cfg's warnings not yet logged, as in a new process
    finally:  # Hydra's log set-up (train.log) is the run's only
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        GlobalHydra.instance().clear()
    line = text.splitlines().index("foo=1") + 1
    warning = (
        f"[yolov4.models.cfg][WARNING] - {cfg_file}:{line}: [convolutional] foo: darknet does not "
        "read this key in [convolutional] and ignores it; so does yolov4"
    )
    log = (run / "train.log").read_text()
    assert log.count(warning) == 1, log
    assert (run / "export/model.onnx").is_file()  # the run went through to its export
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]
