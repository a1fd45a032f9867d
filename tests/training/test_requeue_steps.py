"""Where the Requeue callback stops a fit and how the resume goes on, on a toy Lightning module
(a linear layer, 16 random samples: each fit takes a fraction of a second). The same paths
through train.py with the real network: tests/cli/test_requeue.py and test_requeue_exact.py."""

from __future__ import annotations

import csv
import os
import signal
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from yolov4.data.sampling import EpochShuffle
from yolov4.training.callbacks import AtomicCheckpointIO, StepLearningRateMonitor
from yolov4.training.requeue import REQUEUE_FILE, Requeue, Requeued
from yolov4.training.tracking import csv_logger

SAMPLES = 16


class Toy(L.LightningModule):
    """A linear layer trained with momentum SGD and a per-step lr schedule; records the sample
    indices of each training batch (``seen``: ``(epoch, [index, ...])``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(3, 1)
        self.seen: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self.seen.append((self.current_epoch, index.tolist()))
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ToyData(L.LightningDataModule):
    """16 random samples, shuffled by the project's EpochShuffle (an order per seed and epoch),
    in batches of ``batch_size`` (the last partial one dropped)."""

    def __init__(self, batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        g = torch.Generator().manual_seed(1)
        self.dataset = TensorDataset(
            torch.randn(SAMPLES, 3, generator=g),
            torch.randn(SAMPLES, 1, generator=g),
            torch.arange(SAMPLES),
        )

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(2)
        sampler = EpochShuffle(self.dataset, 2, generator)
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            generator=generator, num_workers=self.num_workers,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=8)


class SignalAtBatch(L.Callback):
    """Sends the process ``signum`` as the fit's ``n``-th training batch starts."""

    def __init__(self, n: int, signum: int = signal.SIGUSR1) -> None:
        self.n, self.signum, self.count = n, signum, 0

    def on_train_batch_start(self, trainer, *args) -> None:
        self.count += 1
        if self.count == self.n:
            os.kill(os.getpid(), self.signum)


def fit(
    run: Path,
    *extra,
    module: Toy | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    ckpt_path=None,
    **trainer_kwargs,
) -> Toy:
    """One fit of ``module`` (a new :class:`Toy`) writing into ``run`` (checkpoints/,
    metrics.csv); 2 epochs unless ``trainer_kwargs`` say ``max_epochs``."""
    trainer_kwargs = {"max_epochs": 2, **trainer_kwargs}
    module = module or Toy()
    trainer = L.Trainer(
        accelerator="cpu", logger=csv_logger(save_dir=str(run), name="", version=""),
        callbacks=[
            Requeue(str(run / "checkpoints"), signals=["SIGUSR1", "SIGINT"], requeue=False),
            ModelCheckpoint(dirpath=run / "checkpoints", filename="last",
                            save_on_train_epoch_end=True, enable_version_counter=False),
            StepLearningRateMonitor(logging_interval="step"),
            *extra,
        ],
        plugins=[AtomicCheckpointIO()], log_every_n_steps=1, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs,
    )  # fmt: skip
    data = ToyData(batch_size, num_workers)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return module


def rows(run: Path, key: str) -> list[tuple[str, str]]:
    """``(step, value)`` of metrics.csv's rows that hold ``key``."""
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r[key]) for r in csv.DictReader(f) if r.get(key)]


def training_state(path: Path) -> dict:
    ckpt = torch.load(path, weights_only=True)
    return {k: ckpt[k] for k in ("state_dict", "optimizer_states", "lr_schedulers", "global_step")}


def assert_same(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    for key in ("state_dict",):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    assert str(a["optimizer_states"]) == str(b["optimizer_states"])
    assert str(a["lr_schedulers"]) == str(b["lr_schedulers"])


def test_a_stop_inside_an_accumulation_window_waits_for_its_optimizer_step(tmp_path):
    """With accumulate_grad_batches=2 a signal in a window's first batch stopped the run after
    it: that batch's gradient, in .grad and in no checkpoint, was lost on resume. The run
    stops after the window's step, the stopped step's metrics are in metrics.csv, the resume
    prints no "not resumable" warning, and it ends bit-equal to an uninterrupted run."""
    fit(tmp_path / "full", accumulate_grad_batches=2)  # 4 batches, 2 steps an epoch
    with pytest.raises(Requeued):
        fit(tmp_path / "job", SignalAtBatch(5), accumulate_grad_batches=2)  # epoch 1's first
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 3  # after batch 6: the window's step
    assert saved["yolov4_requeue"] == {"samples": 8}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path / "job", accumulate_grad_batches=2,
            ckpt_path=tmp_path / "job/checkpoints" / REQUEUE_FILE)  # fmt: skip
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert_same(
        training_state(tmp_path / "job/checkpoints/last.ckpt"),
        training_state(tmp_path / "full/checkpoints/last.ckpt"),
    )
    assert rows(tmp_path / "job", "train/loss") == rows(tmp_path / "full", "train/loss")
    lr = rows(tmp_path / "full", "lr-SGD")  # one row per optimizer step, not per batch
    assert [step for step, _ in lr] == [str(s) for s in range(4)]
    assert rows(tmp_path / "job", "lr-SGD") == lr


@pytest.mark.parametrize(
    ("stop_after", "new_batch_size"),
    [(5, 8), (7, 8), (5, 2)],  # 4 of 16 images trained, 12, and 4 again in batches of 2
)
def test_a_resume_with_another_batch_size_trains_each_image_of_the_epoch_once(
    tmp_path, stop_after, new_batch_size
):
    """requeue.ckpt counted batches: resumed with another data.batch_size, the loader skipped
    that many batches of the new size (images never trained, or trained twice)."""
    stopped = Toy()
    with pytest.raises(Requeued):
        fit(tmp_path, SignalAtBatch(stop_after), module=stopped)
    resumed = fit(tmp_path, batch_size=new_batch_size,
                  ckpt_path=tmp_path / "checkpoints" / REQUEUE_FILE)  # fmt: skip
    epoch_1 = [i for epoch, batch in stopped.seen + resumed.seen if epoch == 1 for i in batch]
    assert sorted(epoch_1) == list(range(SAMPLES))
    first = resumed.seen[0][1]  # the rest of the new size's batch the trained images end in
    assert len(first) == new_batch_size - (stop_after - 4) * 4 % new_batch_size


def test_a_signal_in_the_epochs_last_step_stops_after_the_epochs_checkpoints(tmp_path, recwarn):
    """A signal in an epoch's last batch (or its validation) stopped the run before the epoch
    ended: no last.ckpt of that epoch, and the resume skipped its validation or warned that
    ModelCheckpoint found no monitored metric. The epoch ends first; requeue.ckpt is its end."""
    monitored = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="best",
                                monitor="val/loss", enable_version_counter=False)  # fmt: skip
    with pytest.raises(Requeued):
        fit(tmp_path, SignalAtBatch(4), monitored)  # epoch 0's last batch
    saved = torch.load(tmp_path / "checkpoints" / REQUEUE_FILE, weights_only=True)
    last = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == last["global_step"] == 4
    assert saved["yolov4_requeue"] == {"samples": 0}
    assert (tmp_path / "checkpoints/best.ckpt").is_file()  # its validation was scored
    assert rows(tmp_path, "val/loss")[-1][0] == "3"
    fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="best",
                                  monitor="val/loss", enable_version_counter=False),
        ckpt_path=tmp_path / "checkpoints" / REQUEUE_FILE)  # fmt: skip
    assert not [w for w in recwarn if "could not find the monitored key" in str(w.message)]
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8


@pytest.mark.parametrize("stop_during", [6, 4])  # mid-epoch 1; epoch 0's last step
def test_a_resume_with_dataloader_workers_reads_the_resumed_epochs_order(tmp_path, stop_during):
    """Lightning makes a resumed fit's first train iterator before it sets the sampler's epoch,
    and worker processes take their batch indices as it is made: with data.num_workers > 0 the
    resumed epoch read epoch 0's order."""
    uninterrupted = fit(tmp_path / "full", num_workers=2)
    stopped = Toy()
    with pytest.raises(Requeued):
        fit(tmp_path / "job", SignalAtBatch(stop_during), module=stopped, num_workers=2)
    resumed = fit(tmp_path / "job", num_workers=2,
                  ckpt_path=tmp_path / "job/checkpoints" / REQUEUE_FILE)  # fmt: skip
    assert stopped.seen + resumed.seen == uninterrupted.seen


class SignalAtValidation(L.Callback):
    """Sends the process ``signum`` as the fit's ``n``-th validation batch starts (the sanity
    check's not counted)."""

    def __init__(self, n: int, signum: int = signal.SIGUSR1) -> None:
        self.n, self.signum, self.count = n, signum, 0

    def on_validation_batch_start(self, trainer, *args) -> None:
        if not trainer.sanity_checking:
            self.count += 1
            if self.count == self.n:
                os.kill(os.getpid(), self.signum)


def monitoring(run: Path) -> list[L.Callback]:
    """best.ckpt by val/loss and an early stopping on it (which never stops these runs)."""
    from lightning.pytorch.callbacks import EarlyStopping

    best = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val/loss",
                           enable_version_counter=False)  # fmt: skip
    return [best, EarlyStopping(monitor="val/loss", patience=100)]


def validation_state(run: Path) -> dict:
    """What a run's validations decided: best.ckpt's step and score, the early stopping's
    state (in last.ckpt)."""
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    (stop,) = [v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping")]
    (chosen,) = [
        v
        for k, v in best["callbacks"].items()
        if k.startswith("ModelCheckpoint{'monitor': 'val/loss'")
    ]
    return {"best step": best["global_step"], "best": float(chosen["best_model_score"]),
            "wait": stop["wait_count"], "stop best": float(stop["best_score"])}  # fmt: skip


@pytest.mark.parametrize(
    ("signal_at", "trainer_kwargs"),
    [  # 4 batches an epoch, 2 validation batches
        (SignalAtBatch(2), {"val_check_interval": 2}),  # the step a validation follows
        (SignalAtBatch(6), {"val_check_interval": 0.5}),  # the same in epoch 1
        (SignalAtBatch(3), {"val_check_interval": 3, "check_val_every_n_epoch": None}),
        # a validation inside an accumulation window (after batches 1 and 3): the window's end
        (SignalAtValidation(1), {"val_check_interval": 1, "accumulate_grad_batches": 2}),
        (SignalAtValidation(5), {"val_check_interval": 1, "accumulate_grad_batches": 2}),
    ],
    ids=["step-before-validation", "epoch-1", "across-epochs", "mid-window", "mid-window-2"],
)
def test_a_signal_around_a_validation_within_the_epoch_resumes_as_an_uninterrupted_run(
    tmp_path, signal_at, trainer_kwargs
):
    """A signal in the step a validation within the epoch follows stopped the run before that
    validation, and Lightning's resume skipped it: its val/loss row, its best.ckpt choice and
    its early-stopping check were lost. A signal in a validation inside an accumulation window
    stopped the run there, losing the window's gradient. The run stops at the end of the
    validation, or of the window's step, and the resumed run is the uninterrupted one."""
    fit(tmp_path / "full", *monitoring(tmp_path / "full"), **trainer_kwargs)
    with pytest.raises(Requeued):
        fit(tmp_path / "job", signal_at, *monitoring(tmp_path / "job"), **trainer_kwargs)
    fit(tmp_path / "job", *monitoring(tmp_path / "job"),
        ckpt_path=tmp_path / "job/checkpoints" / REQUEUE_FILE, **trainer_kwargs)  # fmt: skip
    full_rows = rows(tmp_path / "full", "val/loss")
    assert len(full_rows) >= 2 and rows(tmp_path / "job", "val/loss") == full_rows
    assert rows(tmp_path / "job", "train/loss") == rows(tmp_path / "full", "train/loss")
    assert validation_state(tmp_path / "job") == validation_state(tmp_path / "full")
    assert_same(
        training_state(tmp_path / "job/checkpoints/last.ckpt"),
        training_state(tmp_path / "full/checkpoints/last.ckpt"),
    )
