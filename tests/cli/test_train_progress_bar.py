"""train.py's Trainer shows the project's progress bar (``Epoch 2/8``, also for the
``trainer.max_steps`` recipes; the bar itself: tests/training/test_epoch_progress.py)."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from yolov4.cli.train import build_trainer
from yolov4.training.epoch_log import EpochProgressBar

RECIPE = ["experiment=coco_yolov4_tiny", "data=synthetic", "trainer=default", "logger=csv"]


@pytest.mark.parametrize(
    ("overrides", "bar"),
    [
        ([], EpochProgressBar),
        (["trainer.enable_progress_bar=false"], type(None)),
        (["+callbacks.bar._target_=lightning.pytorch.callbacks.RichProgressBar"], RichProgressBar),
    ],
)
def test_the_recipe_trainer_shows_the_projects_bar_or_the_users(
    compose_cfg, tmp_path, overrides, bar
):
    cfg = compose_cfg("train", [*RECIPE, *overrides], tmp_path)
    assert cfg.trainer.max_epochs is None and cfg.trainer.max_steps > 0
    trainer = build_trainer(cfg, "32-true")
    assert type(trainer.progress_bar_callback) is bar
