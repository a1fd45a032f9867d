"""Input sizes follow the network's largest stride (``model.config.max_stride``: 64 for
yolov4-p6): the DataModule's sizes and its multi-scale training batches are multiples of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolov4.data.collate import DetectionCollate
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.transforms import AugmentConfig
from yolov4.errors import ConfigError
from yolov4.models import ModelConfig


def _dm(cache: Path, **kw) -> SyntheticDataModule:
    args = dict(
        num_train=8,
        num_val=2,
        image_size=96,
        cache_dir=str(cache),
        input_size=(128, 192),
        batch_size=4,
        num_workers=0,
        augment=AugmentConfig(multi_scale=1.4),
        size_multiple=ModelConfig.load("yolov4-p6").max_stride,
    )
    return SyntheticDataModule(**{**args, **kw})


def test_multi_scale_batches_are_multiples_of_the_largest_stride(synth_cache: Path):
    dm = _dm(synth_cache)
    assert dm.size_multiple == 64
    dm.prepare_data()
    loader = dm.train_dataloader()
    seen = set()
    for epoch in range(6):  # as the Trainer does: each epoch draws its own sizes
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            h, w = batch["input_size"]  # the device resizes the images to it
            assert h % 64 == 0 and w % 64 == 0, (h, w)
            seen.add((h, w))
    assert len(seen) >= 2  # multi-scale did resize


def test_multi_scale_sizes_without_workers_follow_the_seed_and_the_epoch(synth_cache: Path):
    """Without DataLoader workers the sizes came from the process's global RNG: two
    DataModules of one seed drew different sizes (so different targets), and a run resumed at
    epoch e drew other sizes than an uninterrupted one."""

    def sizes(dm: SyntheticDataModule, epoch: int) -> list:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [tuple(b["input_size"]) for b in loader]

    a, b = _dm(synth_cache, num_train=24), _dm(synth_cache, num_train=24)
    a.prepare_data(), b.prepare_data()
    first = sizes(a, 0)
    torch.rand(100)  # the global stream moves on: the sizes must not
    assert sizes(b, 0) == first and sizes(a, 1) == sizes(b, 1)
    assert [sizes(a, e) for e in range(1, 5)] != [first] * 4  # epochs draw their own


def test_multi_scale_rounding_uses_the_collates_multiple():
    collate = DetectionCollate(multi_scale=1.4, size_multiple=64)
    sample = {
        "image": torch.rand(3, 320, 320),
        "boxes": torch.tensor([[10.0, 20.0, 100.0, 200.0]]),
        "labels": torch.tensor([1]),
        "image_id": 1,
        "original_size": (320, 320),
        "letterbox": (1.0, 1.0, 0.0, 0.0),
    }
    torch.manual_seed(0)
    sizes = {collate([sample])["input_size"][1] for _ in range(40)}
    assert len(sizes) >= 3 and all(s % 64 == 0 for s in sizes), sizes


def test_sizes_that_are_not_multiples_of_the_largest_stride_are_refused(synth_cache: Path):
    with pytest.raises(
        ConfigError, match=r"data.input_size: .*multiples of 64 \(the network's largest stride\)"
    ):
        _dm(synth_cache, input_size=(96, 128))
    with pytest.raises(ConfigError, match=r"data.size_multiple: expected an integer >= 1"):
        _dm(synth_cache, size_multiple=0)
    assert _dm(synth_cache, input_size=(96, 128), size_multiple=32).size_multiple == 32
