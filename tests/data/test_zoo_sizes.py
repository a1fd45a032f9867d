"""Input sizes follow the network's largest stride (``model.config.max_stride``: 64 for
yolov4-p6): the DataModule's sizes and its multi-scale training batches are multiples of it."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_multi_scale_sizes_are_multiples_of_the_largest_stride(synth_cache: Path):
    dm = _dm(synth_cache)
    assert dm.size_multiple == 64 and dm.multi_scale.multiple == 64
    sizes = {dm.multi_scale.size((128, 192), step, 2000) for step in range(0, 2000, 10)}
    assert len(sizes) >= 3 and all(h % 64 == 0 and w % 64 == 0 for h, w in sizes), sizes


def test_training_batches_leave_the_dataloader_at_the_dataset_size(synth_cache: Path):
    """Workers or not, the DataLoader's batches are at the input size; the training module
    gives them the step's multi-scale size on the device."""
    dm = _dm(synth_cache)
    dm.prepare_data()
    for batch in dm.train_dataloader():
        assert tuple(batch["input_size"]) == tuple(batch["images"].shape[-2:]) == (128, 192)


def test_sizes_that_are_not_multiples_of_the_largest_stride_are_refused(synth_cache: Path):
    with pytest.raises(
        ConfigError, match=r"data.input_size: .*multiples of 64 \(the network's largest stride\)"
    ):
        _dm(synth_cache, input_size=(96, 128))
    with pytest.raises(ConfigError, match=r"data.size_multiple: expected an integer >= 1"):
        _dm(synth_cache, size_multiple=0)
    assert _dm(synth_cache, input_size=(96, 128), size_multiple=32).size_multiple == 32
