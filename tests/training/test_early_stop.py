"""Early stopping across a resume, on the toy Lightning module of test_requeue_steps.py: the
resumed config's patience applies, and a run its early stopping stopped trains nothing more.
The same through train.py: tests/cli/test_resume_runs.py."""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import EarlyStopping

from tests.training.test_requeue_steps import Toy, fit
from yolov4.training.early_stop import EarlyStoppingResume


def early_stop(**kwargs) -> EarlyStopping:
    return EarlyStopping(monitor="val/loss", **kwargs)


def saved(run, key: str):
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping")]
    return ckpt["global_step"], state[key]


def test_the_patience_given_on_a_resume_applies_and_is_logged_once(tmp_path, caplog):
    """Lightning restores an EarlyStopping's patience with its state: a patience raised or
    lowered on the resume's command line had no effect."""
    # mode=max on the toy's falling val/loss: every validation after the first is no better
    fit(tmp_path, early_stop(mode="max", patience=100), EarlyStoppingResume())  # 2 epochs
    assert saved(tmp_path, "wait_count") == (8, 1)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        fit(tmp_path, early_stop(mode="max", patience=2), EarlyStoppingResume(), max_epochs=6,
            ckpt_path=tmp_path / "checkpoints/last.ckpt")  # fmt: skip
    said = "resume: EarlyStopping(monitor=val/loss) patience 2 (this run's config; the "
    assert caplog.text.count(said) == 1
    assert "the checkpoint's: 100, with 1 validations without improvement so far" in caplog.text
    assert saved(tmp_path, "patience") == (12, 2)  # stopped after epoch 2, not at max_epochs


def test_a_resume_of_a_run_its_early_stopping_stopped_trains_nothing(tmp_path, caplog):
    """A run stopped after its early stopping's decision (killed before metrics.json) trained
    one more epoch on resume, the decision being Lightning's should_stop, which no checkpoint
    holds."""
    stop = dict(mode="min", stopping_threshold=100.0)  # any val/loss: stops at the first
    fit(tmp_path, early_stop(**stop), EarlyStoppingResume(), max_epochs=3)
    assert saved(tmp_path, "stopped_epoch") == (4, 0)
    resumed = Toy()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        fit(tmp_path, early_stop(**stop), EarlyStoppingResume(), module=resumed, max_epochs=3,
            ckpt_path=tmp_path / "checkpoints/last.ckpt")  # fmt: skip
    assert resumed.seen == []
    assert saved(tmp_path, "stopped_epoch") == (4, 0)
    assert "resume: EarlyStopping stopped the run at epoch 1: Stopping threshold reached" in (
        caplog.text
    )
    assert "nothing trains" in caplog.text


def test_a_run_that_starts_anew_keeps_its_callbacks_as_given(tmp_path, caplog):
    stopping = early_stop(mode="max", patience=100)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        module = fit(tmp_path, stopping, EarlyStoppingResume())
    assert len(module.seen) == 8 and stopping.patience == 100
    assert "resume:" not in caplog.text
