"""Where a run that a signal asked to stop (:class:`~yolov4.training.requeue.Requeue`) stops:
the points whose state a checkpoint holds whole, from which Lightning's resume goes on as the
run would have gone on.

- After the batch that ends an optimizer step: with ``trainer.accumulate_grad_batches`` > 1 the
  gradient of a window's first batches is in the parameters' ``.grad``, which no checkpoint
  holds, so the window's last batch runs first.
- Not after a batch that Lightning validates after (``trainer.val_check_interval`` of
  batches or a fraction of the epoch): that validation runs first and the run stops at its
  end. Lightning resumes a checkpoint taken before a due validation as if the validation had
  run (it skips it), which would lose its metrics, its checkpoint choice (``best.ckpt``) and
  its early-stopping check. (An interval of time is each process's own clock: not foreseen.)
- At the end of a validation within an epoch, unless it falls inside an accumulation window
  (then after the window's step, or the validation after it).
- A signal in an epoch's last step, its validation or its end stops the run at the epoch's
  end, after the epoch's checkpoints (the state ``last.ckpt`` holds).
"""

from __future__ import annotations

from typing import Any

__all__ = ["last_step", "stops_after_batch", "stops_after_validation", "epoch_samples"]


def last_step(trainer: Any) -> bool:
    """Whether the batch just trained is the epoch's last, or the run's last step
    (``trainer.max_steps``)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if progress.is_last_batch or progress.current.ready >= trainer.num_training_batches:
        return True
    return 0 < trainer.max_steps <= trainer.global_step


def _validation_follows(trainer: Any) -> bool:
    """Whether Lightning validates after the batch just trained (Lightning's own test, as it
    makes it after the batch's hooks). A ``trainer.val_check_interval`` of time is not
    foreseen: each process measures it on its own clock, and the stop is agreed by all."""
    loop = trainer.fit_loop
    fetcher = getattr(loop, "_data_fetcher", None)
    if fetcher is None or getattr(trainer, "_val_check_time_interval", None) is not None:
        return False
    return bool(loop.epoch_loop._should_check_val_fx(fetcher))


def stops_after_batch(trainer: Any) -> bool:
    """Whether a signalled run stops at the end of the batch just trained (its
    ``on_train_batch_end``)."""
    if trainer.fit_loop._should_accumulate() or last_step(trainer):
        return False
    return not _validation_follows(trainer)


def stops_after_validation(trainer: Any) -> bool:
    """Whether a signalled run stops at the end of the validation just run within the fit's
    epoch (its ``on_validation_end``)."""
    return not trainer.fit_loop._should_accumulate() and not last_step(trainer)


def epoch_samples(trainer: Any) -> int:
    """The images of the current epoch trained on, all processes together (0 once the epoch's
    batches are all trained: Lightning resumes at the next epoch)."""
    done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    if done >= trainer.num_training_batches:
        return 0
    return done * int(trainer.train_dataloader.batch_size) * max(int(trainer.world_size), 1)
