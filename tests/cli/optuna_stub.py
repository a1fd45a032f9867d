"""A stand-in metric for the Optuna sweep test: ``stub/mAP50`` logged after each validation from a
fixed sequence per Optuna trial number (``+callbacks.stub`` in the test's overrides); a trial
whose sequence is ``None`` fails as a diverged run does."""

from __future__ import annotations

import lightning as L

from yolov4.training.sweep import OptunaPruning

SEQUENCES = {0: [0.5, 0.6], 1: [0.4, 0.5], 2: [0.05, 0.9], 3: None, 4: [0.5, 0.55]}


class StubMetric(L.Callback):
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pruning = next(c for c in trainer.callbacks if isinstance(c, OptunaPruning))
        values = SEQUENCES[pruning.trial.number]
        if values is None:
            raise FloatingPointError("the loss became nan (a diverged trial, stubbed)")
        pl_module.log("stub/mAP50", values[min(trainer.current_epoch, len(values) - 1)])
