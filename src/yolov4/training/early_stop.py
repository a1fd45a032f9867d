"""Early stopping (Lightning's ``EarlyStopping`` or a subclass, e.g. a user's
``+callbacks.early_stop={_target_: lightning.pytorch.callbacks.EarlyStopping, ...}``) in the log
and across a resume.

Lightning restores an early-stopping callback's whole state from the checkpoint resumed,
``patience`` included, and not the stop it decided. :class:`EarlyStoppingResume` makes a
resume follow the run's config and the run's decision:

- the ``patience`` of the resumed run's config replaces the checkpoint's (logged), as the
  ``optim`` settings of a resume do;
- a checkpoint whose early-stopping state says it stopped the run (a run stopped after that
  decision, before its end: ``metrics.json`` is written last) trains nothing: the fit ends where
  the run stopped, and the run's final evaluation, reports and export are written (Lightning
  would train another epoch, then stop again). The resume of a run that finished is refused
  before it starts (:func:`yolov4.cli.resume_refusals.refuse_finished`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L

__all__ = ["EarlyStoppingResume", "log_early_stop", "stopped_state"]

log = logging.getLogger(__name__)


def stopped_state(state: Any) -> bool:
    """Whether ``state``, an early-stopping callback's saved state (``state_dict()``: its
    ``wait_count``, ``stopped_epoch`` and, Lightning >= 2.5, ``stopping_reason``, 0 for "not
    stopped"), says the callback stopped the run."""
    if not isinstance(state, Mapping) or not {"wait_count", "stopped_epoch"} <= set(state):
        return False
    return bool(state.get("stopping_reason", 0)) or int(state["stopped_epoch"]) > 0


def _describe(callback: Any, limit: str = "") -> str:
    """``EarlyStopping stopped the run at epoch N<limit>: why``, ``N`` 1-based as the epoch's
    line (Lightning's ``stopped_epoch`` counts from 0; Lightning says nothing unless the
    callback is ``verbose``)."""
    reason = getattr(callback, "stopping_reason_message", None)  # Lightning >= 2.5
    return (
        f"{type(callback).__name__} stopped the run at epoch {callback.stopped_epoch + 1}{limit}: "
        f"{reason or f'monitor {callback.monitor}'}"
    )


def log_early_stop(trainer: L.Trainer) -> None:
    """One line when an early-stopping callback ended the fit before its limit: which, at which
    epoch, and why. Rank 0."""
    if not trainer.should_stop or not trainer.is_global_zero:
        return
    for callback in getattr(trainer, "early_stopping_callbacks", []):
        if stopped_state(callback.state_dict()):
            log.info("%s", _describe(callback, f" (trainer.max_epochs={trainer.max_epochs})"))


class EarlyStoppingResume(L.Callback):
    """On a resume: the configured ``patience`` of every early-stopping callback in place of the
    checkpoint's, and no training when the checkpoint's state says one stopped the run (see
    the module docstring). Nothing on a run that starts anew."""

    def __init__(self) -> None:
        self._patience: dict[int, int] = {}  # id(callback): its configured patience

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # before Lightning restores the checkpoint's states (it does after ``setup``)
        self._patience = {id(c): c.patience for c in trainer.early_stopping_callbacks}

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.ckpt_path is None:
            return
        for callback in trainer.early_stopping_callbacks:
            configured = self._patience.get(id(callback), callback.patience)
            if callback.patience != configured and trainer.is_global_zero:
                log.info(
                    "resume: %s(monitor=%s) patience %d (this run's config; the checkpoint's: "
                    "%d, with %d validations without improvement so far)",
                    type(callback).__name__, callback.monitor, configured, callback.patience,
                    callback.wait_count,
                )  # fmt: skip
            callback.patience = configured
            if stopped_state(callback.state_dict()):
                trainer.should_stop = True
                if trainer.is_global_zero:
                    log.info(
                        "resume: %s, and the run stopped before its end: nothing trains; the "
                        "final evaluation, reports and export are written (to train on, resume "
                        "without the callback)", _describe(callback),
                    )  # fmt: skip
