"""What :class:`~yolov4.training.module.YoloModule`'s Lightning ``.ckpt`` files carry beyond
Lightning's own state, and what a resume does with it.

A ``.ckpt`` holds the optimizer steps the lr schedule spans (:data:`SCHEDULE_KEY`), the
validation run in the epoch so far (:data:`EPOCH_VAL_KEY`, for the epoch line of a resume) and
the images trained on (darknet's ``seen``, :data:`~yolov4.core.checkpoint.CKPT_SEEN_KEY`, which
:func:`yolov4.load_checkpoint` reads). :func:`save_run_state` writes them
(``on_save_checkpoint``), :func:`saved_run` reads them back with the run's ``optim`` settings
(``on_load_checkpoint``), and :func:`resume_optimizer` applies this run's settings and length to
the optimizer and lr scheduler Lightning restored (``on_train_start``).
"""

from __future__ import annotations

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
    "SavedRun",
    "save_run_state",
    "saved_run",
    "resume_optimizer",
]

SCHEDULE_KEY = "yolov4_schedule_steps"  # in .ckpt files: the length the lr schedule spans
EPOCH_VAL_KEY = "yolov4_epoch_val"  # in .ckpt files: the validation run in the epoch so far


class SavedRun(NamedTuple):
    """What a ``.ckpt`` says of the run that saved it."""

    total: int | None  # optimizer steps its lr schedule spans (None: not recorded)
    epoch_val: Mapping[str, Any] | None  # EpochLine.saved() of its epoch so far
    optim: OptimConfig | None  # its optim settings (None: absent or of other keys)


def save_run_state(
    checkpoint: dict[str, Any],
    schedule_total: int | None,
    epoch_val: Mapping[str, Any] | None,
    trainer: Any,
) -> None:
    """Add the run's schedule length, the epoch's validation so far and, with a ``trainer``
    that counts them, the images trained on to ``checkpoint`` (a Lightning checkpoint dict)."""
    checkpoint[SCHEDULE_KEY] = schedule_total
    checkpoint[EPOCH_VAL_KEY] = epoch_val
    seen = images_trained(trainer)
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
    return SavedRun(checkpoint.get(SCHEDULE_KEY), checkpoint.get(EPOCH_VAL_KEY), optim)


def resume_optimizer(
    trainer: Any,
    step: int,
    saved: tuple[OptimConfig, int | None],
    run: tuple[OptimConfig, int | None],
) -> None:
    """After a resume at optimizer step ``step``, whose optimizer and lr scheduler Lightning
    restored as saved: this run's ``optim`` settings and schedule length (``run``) applied to
    them where they differ from the checkpoint's (``saved``)
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
    )
