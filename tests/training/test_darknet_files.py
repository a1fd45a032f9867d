"""A run's darknet files (``weights/best.cfg``, ``best.weights``, ``best.names``): OpenCV's
darknet importer reads them as the checkpoint's network, ``darknet_weights=`` with its class
names; what cannot be written is a warning, not an error."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.models.test_zoo import boost_heads_, opencv_outputs
from tests.test_darknet import assert_maps_equal
from yolov4 import ConfigError, build_model, load_checkpoint, save_checkpoint
from yolov4.core.darknet_pair import DARKNET_PAD_VALUE, pad_warning
from yolov4.darknet import load_darknet_weights, read_darknet_cfg
from yolov4.training.darknet_files import (
    darknet_files_wanted,
    images_per_step,
    write_darknet_files,
)

NAMES = ["a", "b", "c"]


def checkpoint(tmp_path, randomize, mode: str, hw=(64, 96), **more):
    torch.manual_seed(1)
    model = boost_heads_(randomize(build_model("yolov4-tiny", num_classes=len(NAMES)), seed=1))
    preprocess = {"input_size": list(hw), "mode": mode, **more}
    return save_checkpoint(tmp_path / "weights" / "best.pt", model, NAMES, preprocess)


def test_opencv_reads_the_files_as_the_checkpoints_network(tmp_path, randomize):
    import cv2

    path = checkpoint(tmp_path, randomize, "letterbox")
    cfg, weights = write_darknet_files(path, seen=1234)
    assert (cfg, weights) == (tmp_path / "weights/best.cfg", tmp_path / "weights/best.weights")
    net_options = read_darknet_cfg(cfg.read_text())[0][1]
    assert (net_options["height"], net_options["width"], net_options["letter_box"]) == (
        "64",
        "96",
        "1",
    )
    model = load_checkpoint(path).model.eval()
    assert load_darknet_weights(build_model(cfg=cfg.read_text()), weights).seen == 1234
    images = torch.rand(1, 3, 64, 96)
    maps, _ = opencv_outputs(model, cv2.dnn.readNetFromDarknet(str(cfg), str(weights)), images)
    assert_maps_equal(model, maps, images)


def test_a_stretch_run_writes_letter_box_0(tmp_path, randomize):
    cfg, _ = write_darknet_files(checkpoint(tmp_path, randomize, "stretch"), seen=0)
    assert read_darknet_cfg(cfg.read_text())[0][1]["letter_box"] == "0"


def test_a_failed_write_warns_and_leaves_no_half_pair(tmp_path, randomize, caplog):
    path = checkpoint(tmp_path, randomize, "letterbox")
    (tmp_path / "weights/best.weights").write_bytes(b"an earlier run's weights")
    (tmp_path / "weights/best.cfg").mkdir()  # the .cfg cannot be renamed into place
    with caplog.at_level(logging.WARNING, "yolov4.training.darknet_files"):
        assert write_darknet_files(path, seen=8) is None
    assert "no darknet files for" in caplog.text and "IsADirectoryError" in caplog.text
    assert not (tmp_path / "weights/best.weights").exists()  # written, then removed
    assert not (tmp_path / "weights/best.names").exists()
    assert path.is_file()  # the project's weights stay


def test_a_network_darknet_does_not_feed_warns_and_writes_nothing(tmp_path, randomize, caplog):
    """A run on BGR inputs has no darknet equivalent (darknet feeds RGB): a warning naming why,
    no pair."""
    path = checkpoint(tmp_path, randomize, "letterbox", channel_order="bgr")
    with caplog.at_level(logging.WARNING, "yolov4.training.darknet_files"):
        assert write_darknet_files(path, seen=8) is None
    assert "channel_order=bgr, scale=0.00392157: no darknet equivalent" in caplog.text
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["best.pt"]


def test_predict_py_reads_the_run_darknet_files_with_their_class_names(tmp_path, randomize, caplog):
    """``predict.py darknet_weights=weights/best.weights model=darknet model.cfg=weights/best.cfg``
    without ``names=``: the checkpoint's names, from ``best.names`` beside them (logged)."""
    from hydra import compose, initialize_config_module

    from yolov4.cli.sources import load_predictor

    cfg, weights = write_darknet_files(checkpoint(tmp_path, randomize, "letterbox"), seen=8)
    assert (tmp_path / "weights/best.names").read_text() == "a\nb\nc\n"
    overrides = [f"paths.output_dir={tmp_path}", f"darknet_weights={weights}", "model=darknet",
                 f"model.cfg={cfg}"]  # fmt: skip
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        given = compose("predict", overrides)
    with caplog.at_level(logging.INFO, "yolov4"):
        predictor = load_predictor(given)
    assert predictor.class_names == NAMES
    assert f"class names from {tmp_path / 'weights/best.names'}" in caplog.text


def test_class_names_a_names_file_cannot_hold_warn_and_write_nothing(tmp_path, randomize, caplog):
    torch.manual_seed(1)
    model = randomize(build_model("yolov4-tiny", num_classes=2), seed=1)
    path = save_checkpoint(tmp_path / "weights" / "best.pt", model, ["cat", "dog\nhouse"])
    with caplog.at_level(logging.WARNING, "yolov4.training.darknet_files"):
        assert write_darknet_files(path, seen=8) is None
    assert r"class 1 'dog\nhouse' cannot be a line of a .names file" in caplog.text
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["best.pt"]


@pytest.mark.parametrize(
    "setting, model_cfg, wanted",
    [("auto", "my.cfg", True), ("auto", None, False), (True, None, True), (False, "my.cfg", False)],
)
def test_darknet_files_setting(setting, model_cfg, wanted):
    assert darknet_files_wanted(setting, model_cfg) is wanted


def test_a_bad_setting_names_expected_and_found():
    with pytest.raises(ConfigError, match="darknet_files: expected auto, true or false, got 'yes'"):
        darknet_files_wanted("yes", None)


def test_images_per_step_is_darknets_batch():
    class Trainer:
        accumulate_grad_batches, world_size = 4, 2

    assert images_per_step(Trainer(), 16) == 128


@pytest.mark.parametrize(
    "preprocess, warned",
    [
        ({"mode": "letterbox"}, True),  # the project's border, 114
        ({"mode": "letterbox", "pad_value": DARKNET_PAD_VALUE}, False),
        ({"mode": "stretch"}, False),
    ],
)
def test_a_border_other_than_darknets_grey_is_warned_once(
    tmp_path, randomize, caplog, preprocess, warned
):
    """A run letterboxed with pad 114 writes files whose readers pad with darknet's 0.5 grey:
    warned once, in export.py's darknet format's words; the files are written all the same."""
    path = checkpoint(tmp_path, randomize, **preprocess)
    with caplog.at_level(logging.WARNING, "yolov4"):
        assert write_darknet_files(path, seen=8) is not None
    expected = pad_warning(load_checkpoint(path).preprocess)
    assert (expected is not None) == warned
    found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert found == ([f"darknet files of best.pt: {expected}"] if warned else [])
