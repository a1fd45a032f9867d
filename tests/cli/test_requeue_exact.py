"""train.py stopped by a signal and resumed ends as a run never stopped, with the real network:
gradient accumulation, the loggers' rows, and a second Ctrl-C inside a checkpoint write. The
same paths on a toy module, in the default suite: tests/training/test_requeue_steps.py."""

from __future__ import annotations

import csv
import logging
import os
import signal
import warnings

import lightning as L
import pytest
import torch

import yolov4.training.callbacks as callbacks
from tests.cli.test_ddp_resume import assert_same_training_state
from yolov4.cli.train import train
from yolov4.training.requeue import REQUEUE_FILE, Requeued

pytestmark = pytest.mark.slow


class SignalDuringBatch(L.Callback):
    """Sends the process ``signum`` as the fit's ``n``-th training batch starts."""

    def __init__(self, n: int, signum: int = signal.SIGINT) -> None:
        self.n, self.signum, self.count = n, signum, 0

    def on_train_batch_start(self, trainer, *args) -> None:
        self.count += 1
        if self.count == self.n:
            os.kill(os.getpid(), self.signum)


def csv_rows(run, key: str) -> list[tuple[str, str]]:
    with open(run / "csv/metrics.csv", newline="") as f:
        return [(r["step"], r[key]) for r in csv.DictReader(f) if r.get(key)]


def test_ctrl_c_in_an_accumulation_windows_first_batch_resumes_bit_equal(
    compose_cfg, tiny_run, tmp_path, caplog
):
    """accumulate_grad_batches=2, Ctrl-C in the 5th batch (the first of epoch 1's first window):
    the run stopped after that batch and its gradient was lost (the resumed weights, optimizer
    state and loss differed). It stops after the window's step; the resumed run is bit-equal,
    metrics.csv holds every step's training row (the stopped step's too) and one lr row a step,
    and the resume prints no "dataloader is not resumable" warning."""
    overrides = [*tiny_run, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "trainer.accumulate_grad_batches=2", "optim.burn_in=1", "export=null",
                 "trainer.log_every_n_steps=1"]  # fmt: skip
    train(compose_cfg("train", overrides, tmp_path / "full"))  # 4 batches, 2 steps an epoch
    uninterrupted = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    with pytest.raises(Requeued) as stopped:
        train(compose_cfg("train", overrides, tmp_path / "job"), [SignalDuringBatch(5)])
    assert stopped.value.code == 130
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 3 and saved["yolov4_requeue"] == {"samples": 8}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train(compose_cfg("train", overrides, tmp_path / "job"))
    assert not [x for x in w if "not resumable" in str(x.message)]
    assert "skipping the 8 images of epoch 2 already trained on (2 batches of 4" in caplog.text
    final = torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == uninterrupted["global_step"] == 4
    assert_same_training_state(final, uninterrupted)
    losses = csv_rows(tmp_path / "full", "train/loss")
    assert [step for step, _ in losses] == ["0", "1", "2", "3"]
    assert csv_rows(tmp_path / "job", "train/loss") == losses
    lr = csv_rows(tmp_path / "full", "lr-AdamW/weights")
    assert [step for step, _ in lr] == ["0", "1", "2", "3"]
    assert csv_rows(tmp_path / "job", "lr-AdamW/weights") == lr


def interrupting_write(names: tuple[str, ...], armed=lambda: True):
    """``atomic_write`` sending Ctrl-C from inside torch's writer, once 1 MB of a checkpoint
    named in ``names`` is written, at the first such write while ``armed()`` (where a second
    Ctrl-C lands in a long write)."""
    original = callbacks.atomic_write
    sent = []

    def atomic_write(path, write):
        if os.path.basename(str(path)) not in names or sent or not armed():
            return original(path, write)

        class Interrupting:
            def __init__(self, f) -> None:
                self.f, self.written = f, 0

            def write(self, data):
                before, self.written = self.written, self.written + len(data)
                if before <= 2**20 < self.written:
                    sent.append(path)
                    os.kill(os.getpid(), signal.SIGINT)
                return self.f.write(data)

            def flush(self) -> None:
                self.f.flush()

        return original(path, lambda f: write(Interrupting(f)))

    return atomic_write


def test_a_second_ctrl_c_while_requeue_ckpt_is_written_lets_the_write_complete(
    compose_cfg, tiny_run, tmp_path, monkeypatch, capfd
):
    """The second Ctrl-C raised KeyboardInterrupt inside torch's writer, which turned it into
    "RuntimeError: [enforce fail at inline_container.cc] unexpected pos": a traceback, exit 1,
    no requeue.ckpt. The write completes and the run stops as the first Ctrl-C asked."""
    overrides = [*tiny_run, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "export=null"]  # fmt: skip
    monkeypatch.setattr(callbacks, "atomic_write", interrupting_write((REQUEUE_FILE,)))
    with pytest.raises(Requeued) as stopped:
        train(compose_cfg("train", overrides, tmp_path / "job"), [SignalDuringBatch(6)])
    assert stopped.value.code == 130
    assert "requeue.ckpt is being written; the run stops once it is" in capfd.readouterr().err
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 6


def test_a_second_ctrl_c_inside_an_epoch_checkpoints_write_exits_130_naming_last_ckpt(
    compose_cfg, tiny_run, tmp_path, monkeypatch, caplog
):
    """Ctrl-C in an epoch's last step waits for the epoch's checkpoints; a second one inside
    their write came out of torch's writer as a RuntimeError: a traceback and exit 1. It exits
    130 naming last.ckpt, which holds the previous epoch whole (no temporary file left)."""
    overrides = [*tiny_run, "trainer.max_epochs=3", "trainer.limit_train_batches=null",
                 "export=null"]  # fmt: skip
    first = SignalDuringBatch(8)  # epoch 1's last step
    interrupting = interrupting_write(("last.ckpt", "best.ckpt"), armed=lambda: first.count >= 8)
    monkeypatch.setattr(callbacks, "atomic_write", interrupting)
    with caplog.at_level(logging.WARNING, logger="yolov4"), pytest.raises(SystemExit) as e:
        train(compose_cfg("train", overrides, tmp_path / "job"), [first])
    assert e.value.code == 130 and not isinstance(e.value, Requeued)
    last = tmp_path / "job/checkpoints/last.ckpt"
    assert (
        f"stopped (Ctrl-C) at step 8 without saving: python train.py ckpt_path={last}"
        in caplog.text
    )
    assert torch.load(last, weights_only=True)["global_step"] == 4
    assert not list(last.parent.glob(".*.tmp")) and not (last.parent / REQUEUE_FILE).exists()
    signal.signal(signal.SIGINT, signal.default_int_handler)
