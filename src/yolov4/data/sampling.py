"""The training order and the random streams of the data: a shuffle that depends on the seed and
the epoch alone (:class:`EpochShuffle`, so that a resumed run draws what an uninterrupted one
draws), and the seeds of the DataLoader's workers (:func:`seed_worker`).

Seeds: epoch ``e`` of rank ``r`` draws from ``seed + r * RANK_SEED_STRIDE + e``
(:func:`epoch_seed`); the workers' seeds come from a generator seeded apart from the shuffle.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

from yolov4.data.dataset import DetectionDataset

__all__ = ["EpochShuffle", "epoch_seed", "seed_worker", "RANK_SEED_STRIDE"]

RANK_SEED_STRIDE = 1_000_003  # a prime: seeds of different ranks never collide for < 1e6 epochs
EPOCH_SEED_STRIDE = 1  # epoch e of rank r: seed + r * RANK_SEED_STRIDE + e
WORKER_SEED_OFFSET = 2**40  # worker seeds: a generator seeded apart from any epoch's shuffle


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python, NumPy and the dataset's augmentation from
    the worker's torch seed (distinct per worker, per epoch, and per rank through the
    DataLoader's rank-seeded generator; reproducible for a given seed). Ctrl-C is the main
    process's to handle (a training run finishes its step and saves): workers ignore SIGINT,
    and the main process shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info = get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a function of the run's seed and the epoch number alone."""
    return (seed + epoch * EPOCH_SEED_STRIDE) % 2**63


class EpochShuffle(Sampler[int]):
    """A shuffled order that depends on ``(seed, epoch)`` only, so a run resumed at epoch ``e``
    draws what an uninterrupted run draws there (``RandomSampler`` continues one generator
    through the epochs, which a resumed process restarts). The order is the same in every
    process of a DDP run: Lightning's ``DistributedSamplerWrapper`` deals each process its share
    of it, so the shares split the split (one image in one process); ``stream_seed`` (the
    process's own) seeds the workers and the augmentation. Lightning calls :meth:`set_epoch`
    at each epoch's start, before the train loader (an
    :class:`~yolov4.data.loader.EpochLoader`) makes the epoch's iterator at its first batch,
    also in the first epoch of a resumed fit; it also reseeds the DataLoader's ``generator``
    (the worker seeds of non-persistent workers) and, without workers, the dataset's
    augmentation.
    Persistent workers keep their first epoch's seeds, so they resume close, not bit-equal."""

    def __init__(
        self,
        dataset: DetectionDataset,
        seed: int,
        generator: torch.Generator,
        stream_seed: int | None = None,
    ) -> None:
        self.dataset, self.seed, self.generator = dataset, seed, generator
        self.stream_seed = seed if stream_seed is None else stream_seed
        self.reseed_dataset = False  # set by the DataModule when there are no workers
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        seed = epoch_seed(self.stream_seed, self.epoch)
        self.generator.manual_seed(seed + WORKER_SEED_OFFSET)  # a stream apart from the shuffle
        if self.reseed_dataset:
            self.dataset.reseed(seed % 2**32)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        yield from torch.randperm(len(self.dataset), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.dataset)
