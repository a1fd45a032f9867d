"""The training progress bar names the epoch as the log's epoch lines do (``Epoch 2/2``), also
for a run bounded by ``trainer.max_steps`` alone (the experiment recipes: ``max_epochs=-1``)."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from yolov4.training.epoch_log import EpochProgressBar, epoch_shown, progress_bars


class Descriptions(L.Callback):
    """The training bar's description at the end of each epoch."""

    def __init__(self, bar: EpochProgressBar) -> None:
        self.bar, self.seen = bar, []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seen.append(self.bar.train_progress_bar.desc)


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"max_epochs": None, "max_steps": 7}, ["Epoch 1/2", "Epoch 2/2"]),  # 4 + 3 steps
        ({"max_epochs": 2, "max_steps": -1}, ["Epoch 1/2", "Epoch 2/2"]),
        ({"max_epochs": 3, "max_steps": 4}, ["Epoch 1/1"]),  # the steps end it first
    ],
)
def test_the_bar_counts_the_epochs_the_run_trains(tmp_path, bounds, expected):
    bar = EpochProgressBar()
    seen = Descriptions(bar)
    trainer = L.Trainer(
        **bounds, callbacks=[bar, seen], limit_train_batches=4, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert [d.strip().rstrip(":") for d in seen.seen] == expected


def test_an_unbounded_run_shows_the_epoch_alone():
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False)
    assert epoch_shown(trainer, 4) == "5"


def test_the_bar_is_added_unless_disabled_or_the_user_gave_one():
    assert [type(b) for b in progress_bars([], True)] == [EpochProgressBar]
    assert progress_bars([], False) == []
    assert progress_bars([TQDMProgressBar()], True) == []
