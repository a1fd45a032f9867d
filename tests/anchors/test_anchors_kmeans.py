"""darknet's calc_anchors (transcribed in tests/oracles/darknet_calc_anchors.py) against the
vectorised k-means, figure, fit, masks and box sizes of ``yolov4.anchors``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.oracles import darknet_calc_anchors as dk
from yolov4.anchors import (
    anchor_quality,
    avg_best_iou,
    box_sizes,
    deal_masks,
    fit_anchors,
    fit_model_anchors,
    kmeans,
    wh_iou,
)
from yolov4.anchors.kmeans import iou_histogram
from yolov4.data.records import ImageRecord
from yolov4.errors import ConfigError, DatasetError
from yolov4.models import ModelConfig


def sizes(n: int, seed: int, thin: bool = False) -> np.ndarray:
    """Box sizes in 416-px input pixels: log-uniform, or long thin bars either way round."""
    rng = np.random.default_rng(seed)
    if thin:
        long_side = rng.uniform(60, 380, n)
        short = long_side / rng.uniform(5, 12, n)
        flip = rng.uniform(size=n) < 0.5
        return np.stack([np.where(flip, long_side, short), np.where(flip, short, long_side)], 1)
    return np.exp(rng.uniform(np.log(6), np.log(400), (n, 2))).astype(np.float32)


@pytest.mark.parametrize("seed, thin, k", [(0, False, 9), (1, True, 6), (2, False, 1)])
def test_avg_iou_is_darknets_figure_to_the_bit(seed, thin, k):
    wh = sizes(300, seed, thin).astype(np.float32)
    anchors = sizes(k, seed + 100)
    assert avg_best_iou(wh, anchors) == float(dk.avg_iou(wh, anchors))


def test_avg_iou_of_darknets_default_anchors_by_hand():
    """One box equal to an anchor (IoU 1) and one 10 x 10 box whose best anchor is 10 x 13."""
    anchors = np.array([[10, 13], [16, 30]], np.float32)
    wh = np.array([[16, 30], [10, 10]], np.float32)
    assert wh_iou(wh, anchors)[1, 0] == pytest.approx(100 / 130)
    assert avg_best_iou(wh, anchors) == pytest.approx(100 * (1 + 100 / 130) / 2, rel=1e-6)


@pytest.mark.parametrize("seed, thin, k", [(3, False, 9), (4, True, 6)])
def test_kmeans_matches_darknets_do_kmeans_from_the_same_start(seed, thin, k):
    wh = sizes(150, seed, thin).astype(np.float32)
    start = wh[np.random.default_rng(seed).permutation(len(wh))[:k]]
    ours, rounds = kmeans(wh, start)
    theirs = np.array(dk.do_kmeans(wh, start), np.float32)
    assert rounds >= 1
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("thin", [False, True])
def test_fit_is_at_least_every_darknet_start_and_sorted_by_area(thin):
    wh = sizes(400, 7, thin).astype(np.float32)
    fit = fit_anchors(wh, 9, restarts=6, seed=0)
    area = fit.anchors[:, 0] * fit.anchors[:, 1]
    assert np.all(np.diff(area) >= 0)
    assert fit.avg_iou == avg_best_iou(wh, fit.anchors)
    rng = np.random.default_rng(123)
    for _ in range(4):  # darknet: one k-means from 9 random boxes
        centers = np.array(dk.do_kmeans(wh, wh[rng.permutation(len(wh))[:9]]), np.float32)
        assert fit.avg_iou >= float(dk.avg_iou(wh, centers))
    assert fit.avg_iou >= max(fit.restart_ious) - 0.01  # rounding to 0.01 px aside


def test_fit_beats_default_anchors_on_thin_bars():
    wh = sizes(300, 8, thin=True).astype(np.float32)
    default = ModelConfig.load("yolov4").anchors
    assert fit_anchors(wh, 9, restarts=4).avg_iou > avg_best_iou(wh, np.array(default)) + 20


def test_quality_and_histogram():
    wh = np.array([[10, 10], [10, 10], [100, 5]], np.float32)
    q = anchor_quality(wh, [[10, 10]])
    assert q.poor_share == pytest.approx(1 / 3)  # the bar overlaps the anchor by 50 / 550
    assert q.histogram[9] == 2 and q.histogram[0] == 1 and sum(q.histogram) == 3
    assert q.poor
    assert iou_histogram(np.array([0.0, 0.05, 1.0, 0.95], np.float32)) == [2] + [0] * 8 + [2]


@pytest.mark.parametrize(
    "num, heads, masks",
    [
        (6, 2, [[0, 1, 2], [3, 4, 5]]),
        (9, 3, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
        (16, 4, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]),
    ],
)
def test_masks_dealt_by_area_to_ascending_strides(num, heads, masks):
    assert deal_masks(num, heads) == masks


def test_bad_values_name_their_key():
    with pytest.raises(ConfigError, match=r"num_anchors=7 is not divisible by the model's 2"):
        deal_masks(7, 2)
    with pytest.raises(ConfigError, match="num_anchors: expected a positive integer"):
        deal_masks(0, 2)
    tiny = ModelConfig.load("yolov4-tiny")
    wh = sizes(20, 0)
    with pytest.raises(ConfigError, match="restarts: expected an integer >= 1"):
        fit_model_anchors(wh, tiny, restarts=0)
    with pytest.raises(DatasetError, match="data.train has no boxes"):
        fit_model_anchors(np.zeros((0, 2), np.float32), tiny)
    with pytest.raises(ConfigError, match="num_anchors=6 but data.train has only 4 boxes"):
        fit_model_anchors(wh[:4], tiny)


def test_box_sizes_after_letterbox_and_stretch():
    box = np.array([[10, 20, 60, 40]], np.float32)  # 50 x 20 in a 200 x 100 (W x H) image
    r = ImageRecord(1, "a.jpg", 100, 200, box, np.zeros(1, np.int64))
    empty = ImageRecord(2, "b.jpg", 50, 50)
    np.testing.assert_allclose(box_sizes([r, empty], (416, 416), "letterbox"), [[104, 41.6]])
    np.testing.assert_allclose(box_sizes([r], (416, 416), "stretch"), [[104, 83.2]])
    assert box_sizes([empty], (416, 416), "stretch").shape == (0, 2)


def test_anchors_auto_outside_training_and_null_mean_the_cfgs():
    for asked in ("auto", "fit"):
        with pytest.raises(ConfigError, match=f"model.anchors={asked} is resolved on the training"):
            ModelConfig.from_dict({"name": "yolov4-tiny", "anchors": asked})
    config = ModelConfig.from_dict({"name": "yolov4-tiny", "anchors": None, "masks": None})
    assert config.anchors == ModelConfig.load("yolov4-tiny").anchors
