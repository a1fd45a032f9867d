"""The train DataLoader whose iterator is made at its first batch, after the sampler has the
epoch's number.

Lightning makes a fit's first train iterator (in ``FitLoop.setup_data``) before it calls the
sampler's ``set_epoch`` for that epoch, and uses that iterator for the epoch. A fresh fit starts
at epoch 0, where it makes no difference; a resumed fit (``ckpt_path=``) starts at a later epoch.
DataLoader workers take their first batches of indices, and their seeds from the loader's
``generator``, as the iterator is made, and a DDP ``DistributedSampler`` draws its order there
too: made then, the resumed epoch would read epoch 0's order and worker seeds. :class:`EpochLoader`
returns an iterator that makes the DataLoader's own at its first ``next``, when Lightning has set
the epoch of every sampler (the data module's
:class:`~yolov4.data.sampling.EpochShuffle`, Lightning's ``DistributedSampler`` wrapper).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["EpochLoader", "FirstBatchIterator"]


class FirstBatchIterator:
    """An iterator of ``length`` batches made at its first ``next`` by ``make()``."""

    def __init__(self, make: Callable[[], Any], length: int) -> None:
        self.make, self.it, self.length = make, None, length

    def __iter__(self) -> FirstBatchIterator:
        return self

    def __next__(self) -> Any:
        if self.it is None:
            self.it = self.make()
        return next(self.it)

    def __len__(self) -> int:
        return self.length


class EpochLoader(DataLoader):
    """A DataLoader whose each iterator is made at its first batch (a
    :class:`FirstBatchIterator` over :meth:`new_iterator`)."""

    def __iter__(self) -> Any:  # type: ignore[override]
        return FirstBatchIterator(self.new_iterator, len(self))

    def new_iterator(self) -> Any:
        """The DataLoader's own iterator (workers started or reset, indices drawn)."""
        return DataLoader.__iter__(self)
