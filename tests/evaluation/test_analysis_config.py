"""AnalysisConfig: the one owner of the analysis reports' defaults and checks, the Hydra group
``analysis`` that train.py and evaluate.py share, and evaluate_predictor's validation
postprocess passed per call (the Predictor's own settings untouched)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from yolov4.core.postprocess import DARKNET_VALID, SERVING
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.errors import ConfigError
from yolov4.evaluation import AnalysisConfig, evaluate_predictor
from yolov4.evaluation.analysis import CONF, IOU
from yolov4.evaluation.darknet_map import DARKNET_POINTS, DARKNET_THRESH
from yolov4.evaluation.tide import TB
from yolov4.evaluation.worst import WORST_IMAGES
from yolov4.inference.predictor import Detections
from yolov4.models import ModelConfig


def _analysis(config_name: str, *overrides: str) -> dict:
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return dict(cfg.analysis)


def test_train_and_evaluate_compose_the_one_group_and_its_values_are_the_defaults():
    defaults = AnalysisConfig().to_dict()
    assert _analysis("train") == _analysis("evaluate") == defaults
    # the modules' keyword defaults are the config's
    assert (CONF, IOU, DARKNET_THRESH, DARKNET_POINTS, TB, WORST_IMAGES) == (
        defaults["conf"], defaults["iou"], defaults["darknet_thresh"],
        defaults["darknet_points"], defaults["errors_tb"], defaults["worst_images"],
    )  # fmt: skip
    given = _analysis("evaluate", "analysis.conf=0.4", "analysis.darknet_points=11")
    assert AnalysisConfig.from_config(given) == AnalysisConfig(conf=0.4, darknet_points=11)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"conf": 1.5}, r"analysis.conf must be a number in \[0, 1\], got 1.5"),
        ({"conf": "high"}, r"analysis.conf must be a number in \[0, 1\], got 'high'"),
        ({"iou": 1.0}, r"analysis.iou must be a number in \(0, 1\), got 1.0"),
        ({"darknet_thresh": -0.1}, r"analysis.darknet_thresh must be a number in \[0, 1\]"),
        ({"darknet_points": 7}, r"analysis.darknet_points must be one of 0, 11, 101, got 7"),
        ({"darknet_points": True}, r"analysis.darknet_points must be one of .*, got True"),
        ({"iou": 0.3, "errors_tb": 0.3}, r"errors_tb must be a number in \[0, analysis.iou=0.3\)"),
        ({"worst_images": 2.5}, r"analysis.worst_images must be an integer >= 0, got 2.5"),
        ({"worst_images": -1}, r"analysis.worst_images must be an integer >= 0, got -1"),
        ({"confidence": 0.3}, r"analysis has no key\(s\) \['confidence'\]; the keys are \["),
    ],
)
def test_a_bad_value_or_key_is_a_config_error_naming_it(values, match):
    with pytest.raises(ConfigError, match=match):
        AnalysisConfig.from_config(values)


@pytest.mark.parametrize(
    "override, message",
    [
        ("analysis.conf=nan", "analysis.conf must be a number in [0, 1], got NaN"),
        ("analysis.iou=inf", "analysis.iou must be a number in (0, 1), got infinity"),
        ("analysis.darknet_thresh=-inf", "analysis.darknet_thresh must be a number in [0, 1], "
         "got -infinity"),
        ("analysis.errors_tb=nan", "analysis.errors_tb must be a number in [0, analysis.iou=0.5), "
         "got NaN"),
    ],
)  # fmt: skip
def test_nan_and_infinity_from_the_command_line_are_named(override, message):
    """Hydra reads nan and inf as floats that fail every range check: the message names them
    with the range expected, as predict.py's thresholds do."""
    with pytest.raises(ConfigError) as refused:
        AnalysisConfig.from_config(_analysis("evaluate", override))
    assert str(refused.value) == message


def test_from_config_takes_none_a_config_or_a_partial_mapping():
    assert AnalysisConfig.from_config(None) == AnalysisConfig()
    custom = AnalysisConfig(worst_images=3)
    assert AnalysisConfig.from_config(custom) is custom
    assert AnalysisConfig.from_config({"iou": 0.6}) == dataclasses.replace(
        AnalysisConfig(), iou=0.6
    )


class RecordingPredictor:
    """A Predictor's call interface that records the postprocess each call was given (a model
    of the synthetic data's four classes)."""

    def __init__(self) -> None:
        self.metadata = {"model": ModelConfig.load("yolov4-tiny", num_classes=4).to_dict()}
        self.postprocess = SERVING
        self.given: list = []

    def __call__(self, files, postprocess=None):
        self.given.append(postprocess)
        empty = np.zeros((0, 4), np.float32)
        return [
            Detections(empty, np.zeros(0, np.float32), np.zeros(0, np.int64), [], (64, 64))
            for _ in files
        ]


def test_evaluate_predictor_passes_the_validation_postprocess_per_call(tmp_path):
    dm = SyntheticDataModule(num_train=1, num_val=5, image_size=64, input_size=[64, 64],
                             cache_dir=str(tmp_path), num_workers=0)  # fmt: skip
    dm.prepare_data()
    records = dm.split("val").records
    predictor = RecordingPredictor()
    result = evaluate_predictor(predictor, dm, records, 2, {"iou": 0.5})
    model = ModelConfig.from_dict(predictor.metadata["model"])
    expected = DARKNET_VALID.replace(iou=0.5).resolve(model)
    assert predictor.given == [expected] * 3  # batches of 2, 2, 1
    assert expected.conf == DARKNET_VALID.conf != SERVING.conf
    assert predictor.postprocess is SERVING  # nothing swapped on the predictor
    assert result.metrics["mAP"] == 0.0  # no detections at all
