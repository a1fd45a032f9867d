"""A fit resumed from an epoch's end (``ckpt_path=``) trains the resumed epoch's shuffle order,
with DataLoader workers and with Lightning's DDP sampler, as an uninterrupted fit does."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.utilities.data import _update_dataloader

from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.loader import EpochLoader


def _dm(cache: Path, **kw) -> SyntheticDataModule:
    args = dict(num_train=8, num_val=0, image_size=64, cache_dir=str(cache), input_size=64,
                batch_size=2, num_workers=2, persistent_workers=False)  # fmt: skip
    dm = SyntheticDataModule(**{**args, **kw})
    dm.prepare_data()
    return dm


class Seen(L.LightningModule):
    """One parameter; records the image ids of each training batch per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["image_ids"].tolist())
        return self.w * batch["images"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(cache: Path, epochs: int, ckpt_path=None, **kw) -> tuple[Seen, L.Trainer]:
    module = Seen()
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=_dm(cache, **kw), ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


@pytest.mark.parametrize("persistent", [False, True])
def test_a_resumed_fit_trains_the_resumed_epochs_order_with_workers(
    synth_cache: Path, tmp_path: Path, persistent: bool
):
    uninterrupted, _ = _fit(synth_cache, 2, persistent_workers=persistent)
    assert uninterrupted.seen[0] != uninterrupted.seen[1]  # the epochs' orders differ
    _, first = _fit(synth_cache, 1, persistent_workers=persistent)
    first.save_checkpoint(tmp_path / "last.ckpt")
    resumed, _ = _fit(synth_cache, 2, tmp_path / "last.ckpt", persistent_workers=persistent)
    assert resumed.seen == {1: uninterrupted.seen[1]}


def test_the_train_iterator_reads_the_epoch_set_after_it_is_made(synth_cache: Path):
    dm = _dm(synth_cache)
    loader = dm.train_dataloader()
    assert isinstance(loader, EpochLoader)
    # as Lightning's DDP set-up re-creates it: rank 0 of 2 over the data module's sampler
    ddp = _update_dataloader(loader, DistributedSamplerWrapper(loader.sampler, num_replicas=2,
                                                               rank=0, shuffle=True))  # fmt: skip
    assert type(ddp) is type(loader)
    for data in (loader, ddp):
        orders = {}
        for epoch in (1, 0, 1):  # a resume at epoch 1, then a later fit's epochs
            data.sampler.set_epoch(0)
            it = iter(data)  # Lightning: the iterator, then the epoch
            data.sampler.set_epoch(epoch)
            order = [i for batch in it for i in batch["image_ids"].tolist()]
            assert orders.setdefault(epoch, order) == order
        assert orders[0] != orders[1]


def test_the_ranks_of_a_ddp_run_share_out_each_epochs_images(synth_cache: Path):
    """Each process's data module (its own rank) under Lightning's DDP sampler: the two shares
    of an epoch are disjoint and hold every image once, epoch after epoch."""
    from types import SimpleNamespace

    shares = {}
    for rank in (0, 1):
        dm = _dm(synth_cache, num_workers=0)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        loader = dm.train_dataloader()
        sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=True)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            loader.sampler.set_epoch(epoch)
            shares[rank, epoch] = list(sampler)
    for epoch in (0, 1):
        first, second = shares[0, epoch], shares[1, epoch]
        assert sorted(first + second) == list(range(8)), (first, second)
    assert shares[0, 0] != shares[0, 1]
