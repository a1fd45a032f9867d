"""Anchors at training start: ``model.anchors=auto`` (fitted when the model's fit poorly) and
``fit`` (fitted in any case) resolved on the training split, the fit check
and its warning with the command to run (through ``train.py``: tests/cli/test_train_anchors.py)."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from yolov4.anchors import anchor_quality, box_sizes, fit_model_anchors, masked_anchors
from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.records import ImageRecord
from yolov4.errors import DatasetError
from yolov4.models import ModelConfig
from yolov4.training.anchors import anchors_at_start, anchors_command

TINY = {"name": "yolov4-tiny", "num_classes": 1, "input_size": [96, 96], "masks": None}


def bars_datamodule(num: int, seed: int = 0, thin: bool = True):
    """A stand-in DataModule: ``split('train')`` records of bars (or squares) in 96-px images."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num):
        n = int(rng.integers(1, 4))
        long_side = rng.uniform(30, 90, n)
        short = long_side / rng.uniform(6, 12, n) if thin else long_side
        xy = rng.uniform(0, 5, (n, 2))
        boxes = np.stack([xy[:, 0], xy[:, 1], xy[:, 0] + long_side, xy[:, 1] + short], 1)
        records.append(ImageRecord(i, f"{i}.jpg", 96, 96, boxes.astype(np.float32), np.zeros(n)))
    data = SimpleNamespace(records=records)
    return SimpleNamespace(
        split=lambda name: data if name == "train" else None,
        preprocess_config=PreprocessConfig(input_size=(96, 96), mode="letterbox"),
    )


@pytest.mark.parametrize("asked", ["auto", "fit"])
def test_poorly_fitting_anchors_are_fitted_to_the_training_boxes(caplog, asked):
    """Thin bars: the cfg's anchors fit them poorly, so ``auto`` fits new ones as ``fit`` does."""
    dm = bars_datamodule(40)
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        model, quality = anchors_at_start({**TINY, "anchors": asked}, dm, seed=3)
    wh = box_sizes(dm.split("train").records, (96, 96), "letterbox")
    expected = fit_model_anchors(wh, ModelConfig.load("yolov4-tiny"), seed=3, input_size=(96, 96))
    assert expected.current.poor and expected.fitted.avg_iou > expected.current.avg_iou
    assert model["anchors"] == expected.anchors and model["masks"] == [[0, 1, 2], [3, 4, 5]]
    assert ModelConfig.from_dict(model).anchors == tuple(tuple(a) for a in expected.anchors)
    assert not quality.poor and quality.avg_iou == expected.fitted.avg_iou
    assert f"model.anchors={asked}: 6 anchors fitted to" in caplog.text
    assert ("(the model's own fit poorly)" in caplog.text) == (asked == "auto")
    assert "fit them with" not in caplog.text


def test_auto_keeps_anchors_that_fit_and_fit_replaces_them(caplog):
    """Squares the cfg's anchors fit: ``auto`` keeps them (logged with their figure), ``fit``
    fits new ones all the same."""
    dm = bars_datamodule(40, thin=False)
    masks = [[1, 2, 3], [3, 4, 5]]
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        kept, quality = anchors_at_start({**TINY, "anchors": "auto", "masks": masks}, dm, seed=3)
    assert kept == {**TINY, "anchors": None, "masks": masks}  # null: the cfg's own
    cfg = ModelConfig.from_dict({**TINY, "anchors": None})
    wh = box_sizes(dm.split("train").records, (96, 96), "letterbox")
    assert not quality.poor and quality == anchor_quality(wh, cfg.anchors)
    assert f"model.anchors=auto: the model's own anchors kept ({quality.line()}" in caplog.text
    fitted, _ = anchors_at_start({**TINY, "anchors": "fit", "masks": masks}, dm, seed=3)
    expected = fit_model_anchors(wh, cfg, seed=3, input_size=(96, 96))
    assert fitted["anchors"] == expected.anchors and fitted["masks"] == [[0, 1, 2], [3, 4, 5]]


def test_auto_keeps_the_models_anchors_when_the_fit_is_no_better(monkeypatch, caplog):
    from yolov4.training import anchors as start

    dm = bars_datamodule(40)
    wh = box_sizes(dm.split("train").records, (96, 96), "letterbox")
    cfg = ModelConfig.load("yolov4-tiny")
    worse = fit_model_anchors(wh, cfg, input_size=(96, 96))
    # fitted no better than the cfg's anchors its heads use
    own = anchor_quality(wh, masked_anchors(cfg.anchors, cfg.masks))
    worse = dataclasses.replace(worse, fitted=own)
    monkeypatch.setattr(start, "fit_model_anchors", lambda *a, **k: worse)
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        model, quality = anchors_at_start({**TINY, "anchors": "auto"}, dm)
    assert model["anchors"] is None and quality.poor
    assert "fitted ones no better" in caplog.text


def test_poor_anchors_warn_with_the_command_to_run(caplog):
    overrides = ["data=yolo", "data.input_size=[96,96]", "trainer.max_epochs=3", "model.masks=x"]
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        model, quality = anchors_at_start({**TINY, "anchors": None}, bars_datamodule(30), overrides)
    assert model["anchors"] is None  # the cfg's, untouched
    assert quality.poor and quality.poor_share > 0.5
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING).getMessage()
    assert "the anchors fit the training boxes poorly" in warning
    assert "`python -m yolov4.anchors data=yolo 'data.input_size=[96,96]'`" in warning
    assert "model.anchors=auto" in warning


def test_good_anchors_log_their_fit_without_warning(caplog):
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        _, quality = anchors_at_start({**TINY, "anchors": None}, bars_datamodule(30, thin=False))
    assert not quality.poor
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "anchors against the" in caplog.text


def test_auto_without_boxes_fails_naming_the_split():
    empty = bars_datamodule(0)
    for asked in ("auto", "fit"):
        with pytest.raises(DatasetError, match="data.train has no boxes"):
            anchors_at_start({**TINY, "anchors": asked}, empty)
    model, quality = anchors_at_start({**TINY, "anchors": None}, empty)
    assert quality is None


def test_anchors_command_keeps_data_and_model_overrides():
    cmd = anchors_command(["model=yolov4", "model.anchors=auto", "data.train.images=/d", "seed=1"])
    assert cmd == "python -m yolov4.anchors model=yolov4 data.train.images=/d"


def test_anchors_command_of_a_recipe_or_a_sweep_runs_as_printed():
    """After experiment=coco_yolov4_tiny the printed command lost data=coco (its keys then
    failed to compose); a loss key (model.iou_normalizer, every Optuna trial's) failed too; a
    sweep's own input size was lost; a path with a space was not quoted."""
    from hydra import compose, initialize_config_module

    overrides = ["experiment=coco_yolov4_tiny", "data.train.annotations=/my data/a.json",
                 "+model.iou_normalizer=0.1", "input_side=64"]  # fmt: skip
    cmd = anchors_command(overrides, {"data": "coco", "model": "yolov4-tiny"}, (64, 96))
    assert cmd == (
        "python -m yolov4.anchors data=coco model=yolov4-tiny "
        "'data.train.annotations=/my data/a.json' 'data.input_size=[64,96]'"
    )
    import shlex

    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("anchors", overrides=shlex.split(cmd)[3:])  # it composes
    assert cfg.data.train.annotations == "/my data/a.json" and list(cfg.data.input_size) == [64, 96]


def small_boxes_datamodule(num: int = 40, seed: int = 0):
    """Boxes near yolov4-tiny's anchor 0 (10x14), which neither head of its cfg uses."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num):
        wh = rng.uniform([8, 11], [12, 17], (2, 2))
        boxes = np.concatenate([[[20, 20], [60, 50]], [[20, 20], [60, 50]] + wh], 1)
        records.append(ImageRecord(i, f"{i}.jpg", 96, 96, boxes.astype(np.float32), np.zeros(2)))
    data = SimpleNamespace(records=records)
    return SimpleNamespace(
        split=lambda name: data if name == "train" else None,
        preprocess_config=PreprocessConfig(input_size=(96, 96), mode="letterbox"),
    )


def test_boxes_best_matched_by_an_anchor_no_head_uses_are_reported(caplog):
    """yolov4-tiny's cfg masks (1,2,3 / 3,4,5) leave anchor 0 out: a box whose best anchor is
    anchor 0 gets no box or class signal, however high its IoU. The check reports the share;
    over half the boxes, the anchors are poor (a warning; ``auto`` fits anchors every head uses,
    compared with the cfg's anchors the heads use)."""
    dm = small_boxes_datamodule()
    wh = box_sizes(dm.split("train").records, (96, 96), "letterbox")
    cfg = ModelConfig.from_dict({**TINY, "anchors": None})
    assert cfg.masks == ((1, 2, 3), (3, 4, 5))
    every = anchor_quality(wh, cfg.anchors)  # over all six anchors: a good figure
    quality = anchor_quality(wh, cfg.anchors, cfg.masks)
    assert every.avg_iou > 60 and not every.poor
    assert quality.unmasked_share == 1.0 and quality.poor
    assert "100.0 % best matched by an anchor in no head's mask" in quality.line()
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        _, warned = anchors_at_start({**TINY, "anchors": None}, dm)
    assert warned == quality and "fit them with" in caplog.text
    model, fitted = anchors_at_start({**TINY, "anchors": "auto"}, dm, seed=1)
    assert model["masks"] == [[0, 1, 2], [3, 4, 5]] and fitted.unmasked_share == 0.0
    own = anchor_quality(wh, masked_anchors(cfg.anchors, cfg.masks))
    assert not fitted.poor and fitted.avg_iou > own.avg_iou


def test_a_minority_of_unmasked_boxes_is_reported_not_acted_on():
    """A third of the boxes best matched by anchor 0: reported in the line, not poor."""
    records = small_boxes_datamodule(30).split("train").records
    squares = bars_datamodule(30, thin=False).split("train").records
    wh = box_sizes([*records[:10], *squares], (96, 96), "letterbox")
    cfg = ModelConfig.from_dict({**TINY, "anchors": None})
    quality = anchor_quality(wh, cfg.anchors, cfg.masks)
    assert 0.1 < quality.unmasked_share < 0.5 and not quality.poor
    assert f"{100 * quality.unmasked_share:.1f} % best matched by an anchor" in quality.line()


def test_auto_scores_the_models_anchors_with_the_masks_given():
    """``model.masks`` given with ``auto``: the model's anchors are scored with those masks (the
    ones it would train with). Masks holding anchor 0 serve the small boxes, so they are kept."""
    masks = [[0, 1, 2], [3, 4, 5]]
    model, quality = anchors_at_start(
        {**TINY, "anchors": "auto", "masks": masks}, small_boxes_datamodule()
    )
    assert model == {**TINY, "anchors": None, "masks": masks}
    assert quality.unmasked_share == 0.0 and not quality.poor


def test_auto_with_fewer_boxes_than_anchors_keeps_the_models_and_fit_refuses(caplog):
    """One thin bar: ``auto`` promises the model's anchors unless a fit beats them, so it keeps
    them with a warning (it stopped the run); ``fit`` asked for a fit and is refused."""
    from yolov4.errors import ConfigError

    dm = bars_datamodule(1)
    assert len(dm.split("train").records[0].boxes) < 6
    with caplog.at_level(logging.INFO, logger="yolov4.training.anchors"):
        kept, quality = anchors_at_start({**TINY, "anchors": "auto"}, dm, seed=3)
    assert kept["anchors"] is None and quality.poor
    assert "fewer boxes than its 6 anchors, nothing to fit them to" in caplog.text
    with pytest.raises(ConfigError, match="num_anchors=6 but data.train has only"):
        anchors_at_start({**TINY, "anchors": "fit"}, dm, seed=3)
