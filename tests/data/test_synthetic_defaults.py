"""The default synthetic dataset (configs/data/synthetic.yaml): what `python train.py` trains on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from yolov4.cli.check_data import main as check_main
from yolov4.data.records import COCO_SMALL_AREA

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "yolov4" / "configs"


def test_default_synthetic_dataset_mix(tmp_path: Path, capsys: pytest.CaptureFixture):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=["+data=synthetic", f"data.cache_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    train = dm.split("train")
    assert (
        len(train.records) == cfg.data.num_train
        and len(dm.split("val").records) == cfg.data.num_val
    )
    labels = np.concatenate([r.labels for r in train.records])
    boxes = np.concatenate([r.boxes for r in train.records])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    counts = np.bincount(labels, minlength=4)
    assert counts.min() > 0.2 * len(labels)  # 4 balanced classes
    assert 0.15 < (area < COCO_SMALL_AREA).mean() < 0.5  # some small objects, not mostly
    assert np.sqrt(np.median(area)) > 32  # objects not too tiny on average
    empty = np.mean([len(r.labels) == 0 for r in train.records])
    assert 0.02 < empty < 0.2  # some negatives
    assert 2.0 < len(labels) / len(train.records) < 5.0  # several objects per image
    assert check_main(["data=synthetic", f"data.cache_dir={tmp_path}"]) == 0
    assert "no problems found" in capsys.readouterr().out
