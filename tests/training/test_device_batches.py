"""Batches cross the DataLoader as uint8 and become the model's input on the device
(``YoloModule.on_after_batch_transfer`` → ``batch_to_input``): validation gives exactly what the
float batches made in the workers (the pipeline before) gave, and training steps see float32
images at the multi-scale size the collate drew."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from tests.conftest import module_of, small_synthetic
from yolov4 import build_model
from yolov4.core.preprocess import batch_to_input
from yolov4.data.collate import MultiScale
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.transforms import AugmentConfig
from yolov4.training.module import YoloModule


class FloatInWorkers(SyntheticDataModule):
    """The pipeline before: float32 / 255 in the collate, inside the DataLoader."""

    def _loader(self, name: str, train: bool):
        loader = super()._loader(name, train)
        collate, config = loader.collate_fn, self.preprocess_config
        loader.collate_fn = lambda samples: batch_to_input(collate(samples), config)
        return loader


def _dm(cls, cache, **kw) -> SyntheticDataModule:
    args = {"num_train": 8, "num_val": 6, "input_size": [64, 96], "batch_size": 4, **kw}
    return small_synthetic(cache, cls, **args)  # prepared


def _module(dm: SyntheticDataModule, randomize) -> YoloModule:
    torch.manual_seed(0)  # the convolutions' initial weights
    net = randomize(build_model("yolov4-tiny", num_classes=dm.num_classes), seed=3)
    return module_of(net, dm)


def _record_predictions(module: YoloModule) -> list:
    """Wrap ``module.predict_batch`` to keep (input dtype, detections) of every batch."""
    seen, predict = [], module.predict_batch

    def recorded(batch, *args):
        seen.append((batch["images"].dtype, predict(batch, *args)))
        return seen[-1][1]

    module.predict_batch = recorded
    return seen


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


@pytest.fixture
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "device-batches-cache"


def test_validation_is_identical_to_float_batches_from_the_workers(tmp_path, cache, randomize):
    results = {}
    for cls in (SyntheticDataModule, FloatInWorkers):
        dm = _dm(cls, cache)
        module = _module(dm, randomize)
        seen = _record_predictions(module)
        (logged,) = _trainer(tmp_path).validate(module, datamodule=dm, verbose=False)
        results[cls.__name__] = (logged, seen)
    (new, new_seen), (old, old_seen) = results["SyntheticDataModule"], results["FloatInWorkers"]
    assert new == old
    assert [d for d, _ in new_seen] == [torch.float32] * len(old_seen)
    dets_new = [t for _, dets in new_seen for t in dets]
    dets_old = [t for _, dets in old_seen for t in dets]
    assert sum(len(t) for t in dets_new) > 0  # the comparison covers real detections
    assert all(torch.equal(a, b) for a, b in zip(dets_new, dets_old, strict=True))


class _Sizes(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.val: list[tuple] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        images = batch["images"]
        self.seen.append(
            (module.global_step, images.dtype, tuple(images.shape[-2:]), batch["input_size"],
             float(images.max()))
        )  # fmt: skip

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.val.append(tuple(batch["images"].shape[-2:]))


def test_training_steps_get_float_images_at_the_steps_multi_scale_size(tmp_path, cache, randomize):
    """One size per window of optimizer steps (all the accumulated batches of a step alike),
    the DataModule's schedule's; validation at the input size."""
    augment = dataclasses.replace(AugmentConfig(), multi_scale=1.5)
    dm = _dm(SyntheticDataModule, cache, augment=augment, batch_size=2)
    assert dm.multi_scale is not None
    dm.multi_scale = MultiScale(1.5, seed=5, every=2, final=0)  # darknet's 10 and 100: too long
    sizes = _Sizes()
    trainer = _trainer(
        tmp_path, max_steps=6, accumulate_grad_batches=2, limit_val_batches=1, callbacks=[sizes]
    )
    trainer.fit(_module(dm, randomize), datamodule=dm)
    assert [s[0] for s in sizes.seen] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for step, dtype, hw, size, top in sizes.seen:
        assert dtype == torch.float32 and 0 < top <= 1.0
        assert hw == tuple(size) == dm.multi_scale.size((64, 96), step, 6)
    assert sizes.seen[0][2] == dm.multi_scale.largest((64, 96))  # the first window: largest
    assert len({s[2] for s in sizes.seen}) >= 2  # multi-scale resized on the device
    assert sizes.val and set(sizes.val) == {(64, 96)}


def test_the_log_gives_the_multi_scale_range_and_a_short_runs_one_size(
    tmp_path, cache, randomize, caplog
):
    import logging

    augment = dataclasses.replace(AugmentConfig(), multi_scale=1.4)
    dm = _dm(SyntheticDataModule, cache, augment=augment, batch_size=4)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        _trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(
            _module(dm, randomize), datamodule=dm
        )
    expected = (
        "multi-scale (augment.multi_scale=1.4): 64x96 to 128x160, a new size every 10 "
        "optimizer steps; the first 10 and the windows starting in the last 100 at the "
        "largest (this run's 2 steps all train at it)"
    )
    assert expected in caplog.text
