"""``python -m yolov4.anchors``: the composed config, the fit, the files written (override line,
model yaml, darknet cfg read back by OpenCV's importer and by ``build_model``) and bad values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_module

from yolov4 import build_model
from yolov4.cli.anchors import OVERRIDE_FILE, fit, write_outputs
from yolov4.darknet import save_darknet_weights
from yolov4.errors import ConfigError, DatasetError
from yolov4.models import ModelConfig
from yolov4.models.config import config_sections, yolo_heads

SMALL = ["data.num_train=12", "data.num_val=0", "data.image_size=96", "restarts=2"]


@pytest.fixture
def anchors_cfg(tmp_path):
    def _compose(*overrides: str, name: str = "anchors"):
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            synthetic = name == "anchors" and "data=yolo" not in overrides
            extra = [f"data.cache_dir={tmp_path / 'cache'}"] if synthetic else []
            return compose(name, [f"paths.output_dir={tmp_path / 'run'}", *extra, *overrides])

    return _compose


def test_fit_writes_override_yaml_and_a_cfg_opencv_and_build_model_read(anchors_cfg, tmp_path):
    cfg = anchors_cfg(*SMALL, "input_size=[128,128]")
    report, config = fit(cfg)
    files = write_outputs(tmp_path / "run", report, config, {"name": "yolov4-tiny"})
    assert len(report.anchors) == 6 and report.masks == [[0, 1, 2], [3, 4, 5]]
    assert report.input_size == [128, 128] and report.fitted.avg_iou > report.current.avg_iou
    assert config.anchors == tuple(tuple(a) for a in report.anchors)
    # the cfg's masks leave anchor 0 out; the fitted ones hold every anchor
    assert report.fitted.unmasked_share == 0.0 and 0 < report.current.unmasked_share < 1
    saved = json.loads((tmp_path / "run" / "anchors.json").read_text())
    assert saved["current_unmasked_share"] == report.current.unmasked_share

    # the darknet cfg: build_model reads back anchors and masks; OpenCV's importer runs it
    model = build_model(cfg=str(files["cfg"]))
    assert model.config.anchors == config.anchors and model.config.masks == config.masks
    assert model.config.num_classes == 4 and model.config.input_size == (128, 128)
    save_darknet_weights(model, tmp_path / "m.weights")
    net = cv2.dnn.readNetFromDarknet(str(files["cfg"]), str(tmp_path / "m.weights"))
    net.setInput(np.random.default_rng(0).random((1, 3, 128, 128), np.float32))
    maps = net.forward([f"conv_{i}" for i in model.head_layers])
    assert [m.shape for m in maps] == [(1, 3 * (5 + 4), 8, 8), (1, 3 * (5 + 4), 4, 4)]
    detections = net.forward(net.getUnconnectedOutLayersNames())  # its [yolo] layers decode
    assert len(detections) == 2 and np.isfinite(detections[0]).all()

    # the model yaml is a configs/model file
    values = yaml.safe_load(files["model_yaml"].read_text())
    assert ModelConfig.from_dict({**values, "num_classes": 4}).anchors == config.anchors

    # the override line composes into train.py's config
    line = files["override"].read_text().split()
    train = anchors_cfg(*[w.strip("'") for w in line], name="train")
    assert [list(a) for a in train.model.anchors] == report.anchors
    assert [list(m) for m in train.model.masks] == report.masks
    assert (tmp_path / "run" / OVERRIDE_FILE).is_file()


def test_p6_gets_four_anchors_per_head_and_the_head_filters_follow(anchors_cfg):
    # input_size= is what the boxes are fitted at: data.input_size (96, no multiple of p6's
    # stride 64) is not checked
    cfg = anchors_cfg(*SMALL, "model=yolov4-p6", "num_anchors=8", "input_size=[128,128]",
                      "data.input_size=[96,96]")  # fmt: skip
    report, config = fit(cfg)
    assert report.masks == [[0, 1], [2, 3], [4, 5], [6, 7]]
    sections = config_sections(config)
    for i in yolo_heads(sections):
        assert sections[i].options["num"] == "8"
        assert sections[i - 1].options["filters"] == str(2 * (4 + 5))


def test_bad_values_name_the_key(anchors_cfg, tmp_path):
    with pytest.raises(ConfigError, match="num_anchors=7 is not divisible by the model's 2"):
        fit(anchors_cfg(*SMALL, "num_anchors=7"))
    with pytest.raises(ConfigError, match="input_size: expected"):
        fit(anchors_cfg(*SMALL, "input_size=100"))
    # a dataset without boxes: images whose label files are empty
    images = tmp_path / "empty" / "images"
    (tmp_path / "empty" / "labels").mkdir(parents=True)
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.jpg"), np.full((32, 32, 3), 100, np.uint8))
        (tmp_path / "empty" / "labels" / f"{i}.txt").write_text("")
    # no data.val=: the training split is all the fit reads (the README's command)
    data = ["data=yolo", f"data.train.images={images}", "data.train.names=[a]"]
    with pytest.raises(DatasetError, match="data.train has no boxes"):
        fit(anchors_cfg(*data, name="anchors"))
    with pytest.raises(ConfigError, match="model=darknet needs the cfg file: model.cfg="):
        fit(anchors_cfg(*SMALL, "model=darknet"))


@pytest.mark.slow
def test_python_m_yolov4_anchors_prints_and_writes(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolov4.anchors",
            *SMALL,
            f"data.cache_dir={tmp_path / 'c'}",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "anchors = " in done.stdout and "current anchors: avg IoU" in done.stdout
    assert "train.py overrides: 'model.anchors=[[" in done.stdout
    assert {p.name for p in run.iterdir()} >= {"anchors.json", "model.yaml", "yolov4-tiny.cfg"}
    assert Path(run / "anchors.txt").read_text().startswith("'model.anchors=")
    bad = subprocess.run(
        [sys.executable, "-m", "yolov4.anchors", *SMALL, "num_anchors=7",
         f"data.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'bad'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    said = bad.stdout + bad.stderr  # Hydra's log goes to stdout
    assert bad.returncode == 1 and "ConfigError: num_anchors=7" in said
    assert "Traceback" not in said
