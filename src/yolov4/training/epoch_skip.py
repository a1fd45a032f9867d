"""The train loader of a run resumed mid-epoch: it leaves out the images of the interrupted
epoch already trained on, at any ``data.batch_size``.

Lightning restarts an interrupted epoch's DataLoader from its first batch. A ``requeue.ckpt``
saved mid-epoch records how many images of its epoch were trained on
(:class:`~yolov4.training.requeue.Requeue`), and the loader skips exactly those:

- when they are whole batches of the loader's batch size (always so with the stopped run's own
  ``data.batch_size``), it reads those batches and drops them, so the epoch's shuffle and
  augmentation random streams advance as in an uninterrupted run (a bit-equal resume);
- otherwise (another ``data.batch_size``) the images trained on are not read; the loader's
  batches keep their boundaries: the first batch holds the images left of the batch where the
  trained ones end (fewer than a batch), then whole batches follow;
- when the images left all lie in the epoch's last partial batch, which the train loader drops
  (``drop_last``), they are trained as one last batch.

Lightning counts the epoch's batches done as the loader batches the skipped images cover
(:attr:`SkipPlan.batches`), so the epoch ends with the loader's last batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from yolov4.data.loader import EpochLoader, FirstBatchIterator

__all__ = ["SkipPlan", "plan_skip", "SkippingLoader"]


@dataclass(frozen=True)
class SkipPlan:
    """How a resumed epoch's loader leaves out the ``samples`` images already trained on (this
    process's share): ``batches``, the epoch's loader batches they cover (Lightning's count of
    the batches done), ``read``: they are whole batches, read and dropped."""

    samples: int
    batch_size: int
    batches: int
    read: bool

    def describe(self) -> str:
        """How the loader skips, in words (for the log)."""
        size = self.batch_size
        if self.read:
            batches = "batch" if self.batches == 1 else "batches"
            return f"{self.batches} {batches} of {size}, read and dropped"
        if self.samples // size != self.batches:
            return (
                f"data.batch_size={size}: the images left are fewer than a batch, trained as "
                "one last batch"
            )
        return (
            f"data.batch_size={size} ends no batch there: the first batch is the "
            f"{size - self.samples % size} images left of batch {self.batches + 1}, then whole "
            "batches"
        )


def plan_skip(samples: int, batch_size: int, num_batches: int) -> SkipPlan:
    """The :class:`SkipPlan` of ``samples`` images trained on, for a loader of ``num_batches``
    batches of ``batch_size``."""
    done, part = divmod(samples, batch_size)
    if done >= num_batches:  # what is left lies in the dropped last partial batch: one batch
        return SkipPlan(samples, batch_size, max(num_batches - 1, 0), read=False)
    return SkipPlan(samples, batch_size, done, read=part == 0)


class _ResumedBatches:
    """A loader's index batches from image ``samples`` of the epoch's order on: the batches
    before it left out, the batch it falls in cut at it, the rest whole; when the loader's
    batches end before it (``drop_last``), the order's remaining indices as one batch. Only its
    first iteration starts there: persistent workers' iterator keeps it for the epochs after."""

    def __init__(self, batches: Any, sampler: Any, samples: int, batch_size: int) -> None:
        self.batches, self.sampler = batches, sampler
        self.samples, self.batch_size = samples, batch_size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        samples, self.samples = self.samples, 0
        if not samples:
            yield from self.batches
            return
        done, part = divmod(samples, self.batch_size)
        yielded = False
        for i, batch in enumerate(self.batches):
            if i >= done:
                yield list(batch)[part:] if i == done else batch
                yielded = True
        if not yielded:
            rest = list(self.sampler)[samples:]
            if rest:
                yield rest


class SkippingLoader(EpochLoader):
    """A DataLoader whose next iterator leaves out the images its owner's
    :meth:`take_skip(loader) <yolov4.training.requeue.Requeue.take_skip>` names (a
    :class:`SkipPlan`, on resume; ``None`` otherwise), each iterator made at its first batch
    (then the sampler has its epoch: :class:`~yolov4.data.loader.EpochLoader`). Subclassed per
    owner (``_owner``): Lightning re-creates a loader from its class (DDP samplers)."""

    _owner: Any = None
    _resume: SkipPlan | None = None  # while the iterator is made: its index batches start there

    @property
    def _index_sampler(self) -> Any:  # type: ignore[override]
        batches = super()._index_sampler
        plan = self._resume
        if plan is None:
            return batches
        return _ResumedBatches(batches, self.sampler, plan.samples, plan.batch_size)

    def __iter__(self) -> Any:  # type: ignore[override]
        plan = self._owner.take_skip(self) if self._owner is not None else None
        return FirstBatchIterator(partial(self._resumed_iterator, plan), len(self))

    def _resumed_iterator(self, plan: SkipPlan | None) -> Any:
        if plan is None or plan.read:
            it = self.new_iterator()
            for _ in range(plan.batches if plan is not None else 0):
                next(it)  # read and dropped: the random streams advance as they did
            return it
        self._resume = plan
        try:
            return self.new_iterator()
        finally:
            self._resume = None
