"""The resumed epoch's train loader leaves out the images already trained on: read and dropped
in whole batches (the random streams of an uninterrupted run), cut at the trained images with
another batch size, the epoch's dropped tail as one batch; later epochs whole."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from yolov4.training.epoch_skip import SkippingLoader, SkipPlan, plan_skip


@pytest.mark.parametrize(
    ("samples", "batch_size", "batches", "expected"),
    [
        (8, 4, 4, SkipPlan(8, 4, 2, read=True)),  # the stopped run's batch size: whole batches
        (4, 8, 2, SkipPlan(4, 8, 0, read=False)),  # inside the first batch of 8
        (12, 8, 2, SkipPlan(12, 8, 1, read=False)),  # inside the second
        (16, 8, 2, SkipPlan(16, 8, 1, read=False)),  # past the loader's batches: the tail
        (18, 8, 2, SkipPlan(18, 8, 1, read=False)),
    ],
)
def test_plan_skip(samples, batch_size, batches, expected):
    assert plan_skip(samples, batch_size, batches) == expected


def test_the_log_says_how_the_images_are_skipped():
    assert plan_skip(8, 4, 4).describe() == "2 batches of 4, read and dropped"
    assert plan_skip(4, 4, 4).describe() == "1 batch of 4, read and dropped"
    assert plan_skip(12, 8, 2).describe() == (
        "data.batch_size=8 ends no batch there: the first batch is the 4 images left of batch "
        "2, then whole batches"
    )
    assert plan_skip(16, 8, 2).describe() == (
        "data.batch_size=8: the images left are fewer than a batch, trained as one last batch"
    )


class Indices(Dataset):
    """Item ``i`` is ``i``; counts the items read."""

    def __init__(self, n: int) -> None:
        self.n, self.read = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.read += 1
        return i


class Owner:
    """Stands in for the Requeue callback: the plan of the loader's next iterator, once."""

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def take_skip(self, loader):
        samples, self.samples = self.samples, 0
        return plan_skip(samples, loader.batch_size, len(loader)) if samples else None


def loader(n: int, batch_size: int, samples: int, **kwargs) -> DataLoader:
    cls = type("Loader", (SkippingLoader,), {"_owner": Owner(samples)})
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return cls(Indices(n), batch_size=batch_size, sampler=order, drop_last=True, **kwargs)


def batches(data: DataLoader) -> list[list[int]]:
    return [b.tolist() for b in data]


def test_whole_batches_are_read_and_dropped():
    data = loader(16, 4, samples=8)
    order = list(data.sampler)
    assert batches(data) == [order[8:12], order[12:16]]
    assert data.dataset.read == 16  # the 8 trained on were read: the random streams advance
    assert batches(data) == [order[i : i + 4] for i in range(0, 16, 4)]  # the next epoch whole


@pytest.mark.parametrize("workers", [{}, {"num_workers": 1, "persistent_workers": True}])
def test_another_batch_size_starts_at_the_first_image_not_trained(workers):
    data = loader(16, 8, samples=4, **workers)
    order = list(data.sampler)
    assert batches(data) == [order[4:8], order[8:16]]
    assert batches(data) == [order[0:8], order[8:16]]  # the next epoch whole


def test_images_left_in_the_dropped_tail_are_one_batch():
    data = loader(20, 8, samples=16)  # batches of 8 end at 16: drop_last leaves 4 out
    order = list(data.sampler)
    assert len(data) == 2
    assert batches(data) == [order[16:20]]
    assert batches(data) == [order[0:8], order[8:16]]
