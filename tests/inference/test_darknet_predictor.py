"""``Predictor.from_darknet``: darknet's cfg (or a zoo name) + ``.weights`` + names give OpenCV's
darknet importer's detections; COCO's names for the zoo's 80-class weights; the resize rule of
the cfg (``letter_box``); clear errors for names and files that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.predict_cases import (
    as_rows,
    assert_same_detections,
    darknet_model,
    opencv_detections,
)
from yolov4 import build_model
from yolov4.darknet import save_darknet_weights, write_darknet_cfg
from yolov4.errors import CheckpointError, ConfigError
from yolov4.inference import Predictor
from yolov4.inference.darknet import COCO_NAMES, darknet_resize_mode
from yolov4.models.cfg import CFG_DIR

IMAGE = np.random.default_rng(1).integers(0, 255, (300, 500, 3), dtype=np.uint8)
CONF = 0.95  # a few dozen candidates: no score or IoU near a threshold


@pytest.fixture(scope="module")
def yolov3_tiny(tmp_path_factory):
    """yolov3-tiny at its cfg's 416 px, 80 classes, random weights in a darknet file."""
    d = tmp_path_factory.mktemp("y3t")
    model = darknet_model("yolov3-tiny", IMAGE)
    return model, save_darknet_weights(model, d / "yolov3-tiny.weights")


def test_a_zoo_name_and_weights_give_opencvs_detections_with_cocos_names(yolov3_tiny):
    _, weights = yolov3_tiny
    predictor = Predictor.from_darknet("yolov3-tiny", weights)
    assert predictor.class_names == list(COCO_NAMES) and len(COCO_NAMES) == 80
    assert predictor.preprocess_config.mode == "stretch"  # yolov3-tiny.cfg has no letter_box
    assert predictor.input_size == (416, 416)
    [dets] = predictor(IMAGE, conf=CONF)
    ref = opencv_detections(CFG_DIR / "yolov3-tiny.cfg", weights, IMAGE, (416, 416), CONF)
    assert_same_detections(as_rows(dets.to_dict()["detections"]), ref)
    assert set(dets.class_names) <= set(COCO_NAMES)


def test_a_users_cfg_with_names(tmp_path):
    """model = a .cfg path (3 classes, 128x160): names required, one per class."""
    torch_model = darknet_model(
        "yolov4-tiny", IMAGE, mean=-2.0, num_classes=3, input_size=[128, 160]
    )
    cfg = tmp_path / "mine.cfg"
    cfg.write_text(write_darknet_cfg(torch_model))
    weights = save_darknet_weights(torch_model, tmp_path / "mine.weights")
    predictor = Predictor.from_darknet(cfg, weights, ["cat", "dog", "fish"])
    assert predictor.input_size == (128, 160) and predictor.class_names == ["cat", "dog", "fish"]
    [dets] = predictor(IMAGE, conf=0.5)
    ref = opencv_detections(cfg, weights, IMAGE, (128, 160), 0.5)
    assert_same_detections(as_rows(dets.to_dict()["detections"]), ref)
    with pytest.raises(ConfigError, match="give their names"):
        Predictor.from_darknet(cfg, weights)
    for given in ({"num_classes": 3}, {}):  # a user's cfg: its classes=, not len(names)
        with pytest.raises(ConfigError, match="mine with 3 classes.*: 2 class names for a model"):
            Predictor.from_darknet(cfg, weights, ["cat", "dog"], **given)
    with pytest.raises(ConfigError, match="expected a list of class names, got str 'cdf'"):
        Predictor.from_darknet(cfg, weights, "cdf")
    with pytest.raises(ConfigError, match=r"unique, \['cat'\] repeat"):
        Predictor.from_darknet(cfg, weights, ["cat", "cat", "dog"])
    gen = Predictor.from_darknet(cfg, weights, (n for n in ["cat", "dog", "fish"]))
    assert gen.class_names == ["cat", "dog", "fish"]
    with pytest.raises(ConfigError, match="resize_mode must be one of"):  # before the weights
        Predictor.from_darknet(cfg, tmp_path / "absent.weights", ["a", "b", "c"], resize_mode="pad")


def test_names_set_the_class_count_and_the_weights_must_fit(tmp_path):
    model = build_model("yolov4-tiny", num_classes=2)
    weights = save_darknet_weights(model, tmp_path / "two.weights")
    predictor = Predictor.from_darknet("yolov4-tiny", weights, ["a", "b"])
    assert predictor.class_names == ["a", "b"]
    with pytest.raises(CheckpointError, match="fits .*num_classes=2"):
        Predictor.from_darknet("yolov4-tiny", weights)  # 80 COCO classes: the file has 2
    with pytest.raises(CheckpointError, match="not found"):
        Predictor.from_darknet("yolov4-tiny", tmp_path / "none.weights")
    with pytest.raises(ConfigError, match="neither a zoo network"):
        Predictor.from_darknet("yolov9-huge", weights)


def test_a_letter_box_cfg_is_letterboxed(tmp_path):
    """darknet's rule (evaluate.py's, predict.py's, export.py's): [net] letter_box=1 letterbox."""
    text = (CFG_DIR / "yolov3-tiny.cfg").read_text().replace("[net]\n", "[net]\nletter_box=1\n", 1)
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(text)
    model = build_model(cfg=cfg, num_classes=1)
    assert model.config.letter_box and darknet_resize_mode(model.config) == "letterbox"
    weights = save_darknet_weights(model, tmp_path / "lb.weights")
    # the cfg says 80 classes, the weights hold 1: num_classes= (names alone do not change a cfg)
    letterboxed = Predictor.from_darknet(cfg, weights, ["x"], num_classes=1)
    assert letterboxed.preprocess_config.mode == "letterbox"
    stretched = Predictor.from_darknet(cfg, weights, ["x"], num_classes=1, resize_mode="stretch")
    assert stretched.preprocess_config.mode == "stretch"


def test_names_of_other_count_than_the_cfgs_name_the_count_the_weights_fit(tmp_path):
    """A cfg of 80 classes with weights of 4 and 4 names: the names error says the file fits
    classes=4 and how to give it (Python and command line), before the weights are read."""
    cfg = tmp_path / "mine.cfg"
    cfg.write_text((CFG_DIR / "yolov3-tiny.cfg").read_text())  # classes=80
    weights = save_darknet_weights(build_model(cfg=cfg, num_classes=4), tmp_path / "four.weights")
    names = ["a", "b", "c", "d"]
    fits = (r"mine with 80 classes .*: 4 class names for a model with num_classes=80; .*; "
            rf"{weights} fits this cfg with classes=4: give num_classes=4 \(Predictor\."
            r"from_darknet\(\.\.\., num_classes=4\); on the command line model\.num_classes=4\)")  # fmt: skip
    with pytest.raises(ConfigError, match=fits):
        Predictor.from_darknet(cfg, weights, names)
    assert Predictor.from_darknet(cfg, weights, names, num_classes=4).class_names == names
    # weights of the cfg's own class count, or no weights file: the names error alone
    eighty = save_darknet_weights(build_model(cfg=cfg), tmp_path / "eighty.weights")
    for other in (eighty, tmp_path / "none.weights"):
        with pytest.raises(ConfigError, match=r"num_classes=80; a detection of a class without "
                           r"a name could not be reported$"):  # fmt: skip
            Predictor.from_darknet(cfg, other, names)


def test_predict_py_names_the_class_count_the_weights_fit(tmp_path):
    from hydra import compose, initialize_config_module

    from yolov4.cli.sources import model_checkpoint

    def compose_cfg_predict(overrides):
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            return compose("predict", [f"paths.output_dir={tmp_path}", *overrides])

    cfg_file = tmp_path / "mine.cfg"
    cfg_file.write_text((CFG_DIR / "yolov3-tiny.cfg").read_text())
    weights = save_darknet_weights(build_model(cfg=cfg_file, num_classes=4), tmp_path / "w.weights")
    given = [f"darknet_weights={weights}", "model=darknet", f"model.cfg={cfg_file}",
             "names=[a,b,c,d]"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"give num_classes=4 .* model\.num_classes=4\)"):
        model_checkpoint(compose_cfg_predict(given))
    ckpt = model_checkpoint(compose_cfg_predict([*given, "model.num_classes=4"]))
    assert ckpt.model.num_classes == 4 and ckpt.class_names == ["a", "b", "c", "d"]


def test_without_names_the_names_file_beside_the_weights_or_the_cfg_gives_them(tmp_path, caplog):
    """A user's cfg (3 classes) without names=: ``<weights stem>.names``, else ``<cfg
    stem>.names``, read and logged; names given win over both; none beside: the error says
    which file would be read."""
    import logging

    cfg = tmp_path / "nets" / "net.cfg"
    cfg.parent.mkdir()
    model = build_model("yolov3-tiny", num_classes=3)
    cfg.write_text(write_darknet_cfg(model))
    weights = save_darknet_weights(model, tmp_path / "run" / "w.weights")
    with pytest.raises(ConfigError, match=rf"names=<file.names or data.yaml>, or w.names beside "
                       rf"{weights}\)"):  # fmt: skip
        Predictor.from_darknet(cfg, weights)
    (tmp_path / "nets" / "net.names").write_text("cat\ndog\nfish\n")
    with caplog.at_level(logging.INFO, "yolov4"):
        assert Predictor.from_darknet(cfg, weights).class_names == ["cat", "dog", "fish"]
    assert f"class names from {tmp_path / 'nets' / 'net.names'}" in caplog.text
    (tmp_path / "run" / "w.names").write_text("a\nb\nc\n")
    assert Predictor.from_darknet(cfg, weights).class_names == ["a", "b", "c"]
    assert Predictor.from_darknet(cfg, weights, ["x", "y", "z"]).class_names == ["x", "y", "z"]
    (tmp_path / "run" / "w.names").write_text("a\nb\n")  # a names file of another count
    with pytest.raises(ConfigError, match="net with 3 classes.*: 2 class names for a model"):
        Predictor.from_darknet(cfg, weights)
