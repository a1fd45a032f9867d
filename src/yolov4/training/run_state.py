"""What :class:`~yolov4.training.module.YoloModule`'s Lightning ``.ckpt`` files carry beyond
Lightning's own state, and what a resume does with it.

A ``.ckpt`` holds the optimizer steps the lr schedule spans (:data:`SCHEDULE_KEY`), the run's
length limits (:data:`LENGTH_KEY`), the validation run in the epoch so far
(:data:`EPOCH_VAL_KEY`, for the epoch line of a resume) and the images trained on (darknet's
``seen``, :data:`~yolov4.core.checkpoint.CKPT_SEEN_KEY`, which :func:`yolov4.load_checkpoint`
reads). :func:`save_run_state` writes them (``on_save_checkpoint``), :func:`saved_run` reads
them back with the run's ``optim`` settings (``on_load_checkpoint``), :func:`resumed_schedule`
gives the steps a resumed run's schedule spans, and :func:`resume_optimizer` applies this run's
settings and length to the optimizer and lr scheduler Lightning restored (``on_train_start``).

A resume whose optimizer steps per epoch differ from the checkpoint's run (another
``data.batch_size``, process count or ``trainer.accumulate_grad_batches``) spans the steps
taken plus those left under its own settings; with the checkpoint's ``trainer.max_epochs`` and
``max_steps`` the rest of the checkpoint's schedule is laid over the steps left (the lr goes on
from the checkpoint's), and its ``seen`` goes on from the checkpoint's count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from yolov4.core.checkpoint import CKPT_SEEN_KEY
from yolov4.errors import ConfigError
from yolov4.training.darknet_files import images_trained
from yolov4.training.module_args import optim_config
from yolov4.training.optim import OptimConfig, resume_settings

__all__ = [
    "SCHEDULE_KEY",
    "EPOCH_VAL_KEY",
    "LENGTH_KEY",
    "SavedRun",
    "save_run_state",
    "saved_run",
    "steps_to_run",
    "resumed_schedule",
    "resume_optimizer",
]

SCHEDULE_KEY = "yolov4_schedule_steps"  # in .ckpt files: the length the lr schedule spans
EPOCH_VAL_KEY = "yolov4_epoch_val"  # in .ckpt files: the validation run in the epoch so far
LENGTH_KEY = "yolov4_run_length"  # in .ckpt files: [trainer.max_epochs, trainer.max_steps]


class SavedRun(NamedTuple):
    """What a ``.ckpt`` says of the run that saved it."""

    total: int | None  # optimizer steps its lr schedule spans (None: not recorded)
    epoch_val: Mapping[str, Any] | None  # EpochLine.saved() of its epoch so far
    optim: OptimConfig | None  # its optim settings (None: absent or of other keys)
    step: int | None = None  # its global step
    seen: int | None = None  # the images trained on up to it (None: not recorded)
    length: list | None = None  # its [max_epochs, max_steps] (None: not recorded)

    @property
    def seen_from(self) -> tuple[int, int] | None:
        """``(step, seen)`` to count a resumed run's images from; ``None`` when unknown."""
        if self.step is None or self.seen is None:
            return None
        return self.step, self.seen


def _length(trainer: Any) -> list | None:
    """``[max_epochs, max_steps]`` of ``trainer``; ``None`` without a fit loop."""
    if not hasattr(trainer, "fit_loop"):
        return None
    return [trainer.max_epochs, trainer.max_steps]


def save_run_state(
    checkpoint: dict[str, Any],
    schedule_total: int | None,
    epoch_val: Mapping[str, Any] | None,
    trainer: Any,
    seen_from: tuple[int, int] | None = None,
) -> None:
    """Add the run's schedule length and limits, the epoch's validation so far and, with a
    ``trainer`` that counts them, the images trained on (counted from ``seen_from``:
    :func:`~yolov4.training.darknet_files.images_trained`) to ``checkpoint`` (a Lightning
    checkpoint dict)."""
    checkpoint[SCHEDULE_KEY] = schedule_total
    checkpoint[EPOCH_VAL_KEY] = epoch_val
    checkpoint[LENGTH_KEY] = _length(trainer)
    seen = images_trained(trainer, seen_from)
    if seen is not None:  # the images trained on: darknet's seen (load_checkpoint reads it)
        checkpoint[CKPT_SEEN_KEY] = seen


def saved_run(checkpoint: Mapping[str, Any]) -> SavedRun:
    """The :class:`SavedRun` of a Lightning checkpoint dict; ``None`` for each key it lacks,
    and for ``optim`` hyper-parameters that :func:`~yolov4.training.module_args.optim_config`
    does not read."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("optim")
    try:
        optim = optim_config(saved) if saved is not None else None
    except (ConfigError, TypeError):  # a checkpoint of other optim keys: its values unknown
        optim = None
    return SavedRun(
        checkpoint.get(SCHEDULE_KEY),
        checkpoint.get(EPOCH_VAL_KEY),
        optim,
        checkpoint.get("global_step"),
        checkpoint.get(CKPT_SEEN_KEY),
        checkpoint.get(LENGTH_KEY),
    )


def steps_to_run(trainer: Any) -> int | None:
    """The optimizer steps of a fit resumed at ``trainer.global_step`` (as in its
    ``on_train_start``, the loops restored): those taken plus those left under its settings,
    the rest of the resumed epoch (the batches of it its loader still gives) and its epochs
    after, within ``trainer.max_steps``. ``None`` for a run without a length in epochs."""
    batches = getattr(trainer, "num_training_batches", None)
    max_epochs = getattr(trainer, "max_epochs", None)
    if batches is None or not math.isfinite(batches) or max_epochs in (None, -1):
        return None
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    per_epoch = math.ceil(batches / accumulate)
    loop = trainer.fit_loop
    done = int(loop.epoch_loop.batch_progress.current.ready) if loop.restarted_mid_epoch else 0
    left = per_epoch - done // accumulate + (max_epochs - trainer.current_epoch - 1) * per_epoch
    total = trainer.global_step + max(left, 0)
    return min(total, trainer.max_steps) if trainer.max_steps >= 0 else total


def resumed_schedule(
    trainer: Any, saved: SavedRun, total: int
) -> tuple[int, tuple[int, int] | None]:
    """``(steps, resumed)`` of a fit resumed from a checkpoint that says ``saved`` of its run,
    its schedule laid over ``total`` steps at set-up: the steps its schedule spans
    (:func:`steps_to_run`, ``total`` where that has none) and, for a run of the checkpoint's
    length limits whose steps differ from the checkpoint's schedule,
    :func:`~yolov4.training.optim.lr_factor`'s ``resumed`` (else ``None``)."""
    steps = steps_to_run(trainer) if hasattr(trainer, "fit_loop") else None
    steps = total if steps is None else steps
    step = int(trainer.global_step)
    same_length = saved.length is not None and list(saved.length) == _length(trainer)
    if same_length and saved.total and saved.total != steps and steps > step:
        return steps, (step, int(saved.total))
    return steps, None


def resume_optimizer(
    trainer: Any,
    step: int,
    saved: tuple[OptimConfig, int | None],
    run: tuple[OptimConfig, int | None],
    resumed: tuple[int, int] | None = None,
) -> None:
    """After a resume at optimizer step ``step``, whose optimizer and lr scheduler Lightning
    restored as saved: this run's ``optim`` settings and schedule length (``run``) applied to
    them where they differ from the checkpoint's (``saved``; ``resumed``: the rest of its
    schedule laid over this run's steps, :func:`resumed_schedule`)
    (:func:`~yolov4.training.optim.resume_settings`). Nothing happens when either length is
    unknown; without a ``trainer`` (a user's own loop) the changes are only logged."""
    (old, old_total), (new, total) = saved, run
    if not old_total or not total:
        return
    optimizers = trainer.optimizers if trainer is not None else []
    resume_settings(
        step,
        saved=(old, old_total),
        run=(new, total),
        optimizer=optimizers[0] if optimizers else None,
        scheduler=trainer.lr_scheduler_configs[0].scheduler if optimizers else None,
        resumed=resumed,
    )
