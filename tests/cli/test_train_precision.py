"""``python train.py`` with the default ``trainer.precision=auto``: on a CPU with native bf16
the run trains in bf16-mixed and its loss curve stays within :data:`LOSS_RTOL` of the same run
in 32-true; elsewhere it trains in 32-true and the log says why."""

from __future__ import annotations

import logging

import lightning as L
import pytest

from yolov4.cli.train import train
from yolov4.training.precision import CPU_BF16_ENV, cpu_bf16

STEPS = 6
# the largest relative difference of a step's loss (same seed, same batches): bf16 keeps 8
# mantissa bits, and 6 steps of AdamW let the two runs drift apart a little
LOSS_RTOL = 0.02  # measured: 0.5% at worst (2026-12-06, AMX Xeon)


class Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.precision = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.precision = str(trainer.precision)
        self.losses.append(float(outputs["loss"]))


def run(compose_cfg, tiny_run, tmp_path, *overrides, steps: int = STEPS) -> Losses:
    limit = [f"trainer.limit_train_batches={steps}", "data.num_train=24", "export=null"]
    cfg = compose_cfg("train", [*tiny_run, *limit, *overrides], tmp_path)
    losses = Losses()
    train(cfg, extra_callbacks=[losses])
    assert len(losses.losses) == steps
    return losses


@pytest.mark.slow
def test_auto_trains_like_fp32(compose_cfg, tiny_run, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    native, _ = cpu_bf16()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        auto = run(compose_cfg, tiny_run, tmp_path / "auto")
    assert "trainer.precision=auto -> " in caplog.text
    if not native:
        assert auto.precision == "32-true"
        assert "no native bf16" in caplog.text
        return
    assert auto.precision == "bf16-mixed"
    fp32 = run(compose_cfg, tiny_run, tmp_path / "fp32", "trainer.precision=32-true")
    assert fp32.precision == "32-true"
    worst = max(abs(a - b) / abs(b) for a, b in zip(auto.losses, fp32.losses, strict=True))
    print(f"bf16 {auto.losses}\nfp32 {fp32.losses}\nworst relative difference {worst:.4f}")
    for step, (a, b) in enumerate(zip(auto.losses, fp32.losses, strict=True)):
        assert abs(a - b) <= LOSS_RTOL * abs(b), f"step {step}: bf16 {a:.4f} vs fp32 {b:.4f}"
    assert auto.losses != fp32.losses  # bf16 really ran: not bit-identical to fp32


def test_auto_without_bf16_trains_fp32(compose_cfg, tiny_run, tmp_path, monkeypatch, caplog):
    """The other branch on any CPU: YOLOV4_CPU_BF16=0 makes auto 32-true, logged with why."""
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    with caplog.at_level(logging.INFO, logger="yolov4"):
        losses = run(compose_cfg, tiny_run, tmp_path, steps=1)
    assert losses.precision == "32-true"
    assert f"trainer.precision=auto -> 32-true ({CPU_BF16_ENV}=0: no native bf16" in caplog.text


@pytest.fixture
def in_process_ddp():
    """Lightning's DDP in the test process leaves torch.distributed initialised and its
    variables (MASTER_PORT, LOCAL_RANK, ...) in os.environ; later DDP runs in this process
    (and the processes they start) would join that group: both are undone after the test."""
    import os

    import torch.distributed as dist

    saved = dict(os.environ)
    yield
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def test_trainer_ddp_on_the_cpu_trains_without_sync_batchnorm(
    compose_cfg, tiny_run, tmp_path, caplog, in_process_ddp
):
    """trainer=ddp trainer.accelerator=cpu (as the group's comment says): torch's SyncBatchNorm
    runs on CUDA only, so it is turned off, logged, instead of failing in the first forward."""
    with caplog.at_level(logging.INFO):
        losses = run(compose_cfg, tiny_run, tmp_path, "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=1", "trainer.precision=32-true", steps=2)  # fmt: skip
    assert losses.precision == "32-true"
    said = "trainer.sync_batchnorm=true is not applied on the CPU (SyncBatchNorm runs on CUDA only)"
    assert said in caplog.text


def test_a_gpu_recipe_without_a_gpu_says_how_to_train_on_the_cpu(
    compose_cfg, tiny_run, tmp_path, monkeypatch
):
    from yolov4 import ConfigError

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = compose_cfg("train", [*tiny_run, "trainer=gpu"], tmp_path)
    with pytest.raises(
        ConfigError, match="has no CUDA GPU: add trainer=default to train on the CPU"
    ):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
