"""The training log's lines about the run's course (rank 0's): one per epoch
(:class:`EpochLine`: losses, validation, lr, time; ``epoch 3/8``, 1-based over the run's
epoch count as ultralytics and darknet users read it, where Lightning counts from 0) and the
multi-scale sizes the run trains at (:func:`log_multi_scale`); the progress bar that names the
epoch the same way (:class:`EpochProgressBar`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from yolov4.evaluation import EvaluationResult

__all__ = [
    "EpochLine",
    "EpochProgressBar",
    "epoch_count",
    "epoch_shown",
    "log_multi_scale",
    "progress_bars",
]

log = logging.getLogger(__name__)


def epoch_count(trainer: Any) -> int | None:
    """The number of epochs the run trains: ``trainer.max_epochs``, or the epochs
    ``max_steps`` takes (the experiment recipes give steps, as darknet's ``max_batches``),
    whichever is fewer; ``None`` when neither bounds the run."""
    counts = []
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        counts.append(trainer.max_epochs)
    batches = trainer.num_training_batches
    if trainer.max_steps > 0 and isinstance(batches, int) and batches > 0:
        per_epoch = math.ceil(batches / max(1, trainer.accumulate_grad_batches))
        counts.append(math.ceil(trainer.max_steps / per_epoch))
    return min(counts) if counts else None


def epoch_shown(trainer: Any, epoch: int) -> str:
    """Lightning's (0-based) ``epoch`` as the run's lines show it: 1-based over the run's
    :func:`epoch_count` (``3/8``), the number alone when nothing bounds the run (``3``)."""
    shown, count = epoch + 1, epoch_count(trainer)
    return str(shown) if count is None else f"{shown}/{max(count, shown)}"


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, its training bar named ``Epoch 3/8`` as :func:`epoch_shown` names
    the epoch (a recipe bounded by ``trainer.max_steps`` alone has ``max_epochs=-1``, a total
    Lightning's own bars cannot show)."""

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"Epoch {epoch_shown(trainer, trainer.current_epoch)}"
        )


def progress_bars(callbacks: list[Any], enabled: bool) -> list[EpochProgressBar]:
    """``[EpochProgressBar()]`` for a trainer whose ``enable_progress_bar`` is ``enabled`` and
    whose ``callbacks`` hold no progress bar of the user's; else ``[]``."""
    if not enabled or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    return [EpochProgressBar()]


def log_multi_scale(trainer: Any, preprocess: Mapping[str, Any], total: int | None) -> None:
    """The multi-scale sizes (the DataModule's ``multi_scale``) a run of ``total`` optimizer
    steps trains at around ``preprocess["input_size"]``, and when a run is too short to change
    size."""
    multi_scale = getattr(trainer.datamodule, "multi_scale", None)
    if multi_scale is None or not trainer.is_global_zero:
        return
    size = tuple(preprocess["input_size"])
    low, high = multi_scale.smallest(size), multi_scale.largest(size)
    log.info(
        "multi-scale (augment.multi_scale=%g): %s to %s, a new size every %d optimizer "
        "steps; the first %d and the windows starting in the last %d at the largest%s",
        multi_scale.coefficient, "x".join(map(str, low)), "x".join(map(str, high)),
        multi_scale.every, multi_scale.every, multi_scale.final,
        f" (this run's {total} steps all train at it)"
        if total is not None and total <= multi_scale.every + multi_scale.final
        else "",
    )  # fmt: skip


class EpochLine:
    """What one epoch's line reports, gathered while it runs: the sums of this rank's
    ``[total, box, obj, cls]`` losses and its batches, the epoch's start time, whether it began
    before a mid-epoch resume, and the latest validation run during it (``val``, of the weights
    of step ``val_step``; ``val_restored``: run before the stop a mid-epoch resume continues,
    read back from the checkpoint by :meth:`restore`)."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.batches = 0
        self.started = 0.0
        self.resumed = False
        self.val: EvaluationResult | Mapping[str, float] | None = None
        self.val_step: int | None = None
        self.val_restored = False

    def validated(self, result: EvaluationResult, step: int) -> None:
        """A validation of the weights of step ``step`` ran in this epoch."""
        self.val, self.val_step, self.val_restored = result, step, False

    def saved(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this epoch's validation (``{"mAP", "mAP50", "step"}``),
        for a resume mid-epoch to report it; ``None`` when none ran."""
        if self.val is None:
            return None
        return {
            "mAP": float(self.val["mAP"]),
            "mAP50": float(self.val["mAP50"]),
            "step": self.val_step,
        }

    def restore(self, saved: Mapping[str, Any] | None) -> None:
        """This epoch's validation as a checkpoint kept it (:meth:`saved`): a resume mid-epoch
        reports the validation run before the stop. An epoch that starts anew clears it
        (:meth:`new_epoch`)."""
        if saved is not None:
            self.val = {"mAP": saved["mAP"], "mAP50": saved["mAP50"]}
            self.val_step, self.val_restored = saved.get("step"), True

    def begin(self, resumed: bool = False) -> None:
        """The epoch's clock starts; ``resumed``: inside an epoch a resume entered mid-way."""
        self.started, self.resumed = time.perf_counter(), resumed

    def new_epoch(self) -> None:
        self.loss, self.batches = None, 0
        self.val, self.val_step, self.val_restored = None, None, False
        self.begin(resumed=False)

    def add(self, parts: torch.Tensor) -> None:
        """One batch's ``[total, box, obj, cls]`` losses (detached, float32)."""
        self.loss = parts if self.loss is None else self.loss + parts
        self.batches += 1

    def log(self, trainer: Any, epoch: int, step: int) -> None:
        """Rank 0's line for Lightning's (0-based) ``epoch``, shown as :func:`epoch_shown`
        (``epoch 8/8`` for the last of 8): the mean training loss of its
        batches, its parts, the validation of the epoch (when one ran), the learning rate and
        the time."""
        if not trainer.is_global_zero or not self.batches:
            return
        total, box, obj, cls = (self.loss / self.batches).tolist()
        val = "no validation"
        if self.val is not None:
            val = f"val mAP {self.val['mAP']:.4f} mAP50 {self.val['mAP50']:.4f}"
        if self.val is not None and self.val_restored:
            val += f" (step {self.val_step}, before the stop)"
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0
        log.info(
            "epoch %s step %d: train loss %.4f (box %.4f obj %.4f cls %.4f) | %s | lr %.3g | %.1f s",
            epoch_shown(trainer, epoch), step,
            total, box, obj, cls, val, lr, time.perf_counter() - self.started,
        )  # fmt: skip
        if self.resumed:
            log.info(
                "  (resumed mid-epoch: the loss and time above are of the %d batches since)",
                self.batches,
            )
